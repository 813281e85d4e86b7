//! The daemon's side of queue control: the socket, and each operation done the
//! way every other state change is done: claim the message, change it, write it
//! durably, then reschedule.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};

use super::{Access, Action, Entry, ListFilter, Overview, Reply, Request, Selection};
use crate::admission::{self, Admission};
use crate::clock::unix_now;
use crate::delivery::Delivery;
use crate::metrics::Finish;
use crate::spool::{Envelope, StoreError};

/// A request line is small; anything bigger is not a client of ours.
const MAX_REQUEST: u64 = 64 * 1024;
/// Connections one queue socket serves at once, and one user's share of them
/// (`crate::admission`): a crowd of idle connections from one user leaves
/// the rest for the others, and never the process's descriptors.
const SLOTS: usize = 64;
const SHARE: usize = 16;
/// How long a client may take to send its request line.
const READ_TIME: Duration = Duration::from_secs(10);
/// How long one request may take in all, its answer read by the client
/// included (a million-message listing takes seconds): a client that stops
/// reading gives its slot back then.
const REQUEST_TIME: Duration = Duration::from_secs(15 * 60);
/// How long an operation waits for a delivery attempt in flight on the message.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// Binds a UNIX socket with `mode`, replacing a stale socket file left by a
/// previous run, and gives it to `group` if set.
pub fn bind_socket(path: &Path, mode: u32, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another running daemon", path.display()),
            ))
        }
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
    let listener = UnixListener::bind(path)?;
    set_owner_and_mode(path, mode, group)?;
    Ok(listener)
}

/// Gives the socket just bound its group and mode through a descriptor of
/// the node itself (`O_PATH|O_NOFOLLOW`), so a link put at its name is never
/// what is changed; chmod goes through `/proc/self/fd`, as `fchmod` does not
/// take such a descriptor.
fn set_owner_and_mode(path: &Path, mode: u32, group: Option<&str>) -> std::io::Result<()> {
    use nix::fcntl::{openat, OFlag, AT_FDCWD};
    use nix::sys::stat::Mode;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(AT_FDCWD, path, flags, Mode::empty())?;
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_mode & nix::sys::stat::SFlag::S_IFMT.bits() != nix::sys::stat::SFlag::S_IFSOCK.bits() {
        return Err(std::io::Error::other(format!(
            "{} was replaced while it was made",
            path.display()
        )));
    }
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)
            .ok()
            .flatten()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("group {g:?} does not exist"),
                )
            })?;
        let empty = nix::fcntl::AtFlags::AT_EMPTY_PATH;
        nix::unistd::fchownat(&fd, "", None, Some(gid.gid), empty)?;
    }
    let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(by_fd, std::fs::Permissions::from_mode(mode))
}

pub async fn serve(relay: Arc<Delivery>, listener: UnixListener, access: Access) {
    let slots = Admission::new(SLOTS, SHARE);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off; the other servers go on.
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the server's cap or the user's share: closed at once.
        let Some(ticket) = admission::peer(&stream).ok().and_then(|c| slots.admit(c)) else {
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(REQUEST_TIME, handle(relay, stream, access)).await {
                Ok(Err(e)) => tracing::debug!("control connection ended: {e}"),
                Err(_) => tracing::debug!("control connection timed out"),
                Ok(Ok(())) => {}
            }
            drop(ticket);
        });
    }
}

async fn handle(relay: Arc<Delivery>, stream: UnixStream, access: Access) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(MAX_REQUEST));
    tokio::time::timeout(READ_TIME, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let mut out = BufWriter::new(w);
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let done = Reply::Done {
                count: 0,
                error: Some(format!("bad request: {e}")),
            };
            send(&mut out, &done).await?;
            return out.flush().await;
        }
    };
    if access == Access::Read && request.access() == Access::Admin {
        let local = &relay.config().local;
        let done = Reply::Done {
            count: 0,
            error: Some(format!(
                "{} is not allowed on {}: use {} ({})",
                request.what(),
                local.control_socket().display(),
                local.admin_socket().display(),
                local.who_may(Access::Admin)
            )),
        };
        send(&mut out, &done).await?;
        return out.flush().await;
    }
    let done = match run(&relay, request, &mut out).await {
        Ok(count) => Reply::Done { count, error: None },
        Err(e) => Reply::Done {
            count: 0,
            error: Some(e.to_string()),
        },
    };
    send(&mut out, &done).await?;
    out.flush().await
}

async fn send<W: tokio::io::AsyncWrite + Unpin>(out: &mut W, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await
}

type Out = BufWriter<tokio::net::unix::OwnedWriteHalf>;

/// Why a request failed as a whole (its text goes back in `Done`).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: no such message in the queue")]
    NoSuchMessage(String),
    #[error("no such message in the queue")]
    NoneFound,
    #[error("no messages selected (give queue ids, --route or --all)")]
    NothingSelected,
    #[error("no route named {0:?}")]
    NoRoute(String),
    #[error(
        "token_source {name:?} does not share tokens for {user:?}: list the account in its share_as"
    )]
    NotShared { name: String, user: String },
    #[error(transparent)]
    Reload(#[from] crate::daemon::reload::ReloadError),
    #[error(transparent)]
    Token(#[from] crate::oauth::TokenError),
    /// The client went away while the answer was being written.
    #[error("writing the answer: {0}")]
    Io(#[from] std::io::Error),
}

/// Performs one request, streaming its items; returns how many there were.
async fn run(
    relay: &Arc<Delivery>,
    request: Request,
    out: &mut Out,
) -> Result<usize, RequestError> {
    match request {
        Request::List(filter) => list(relay, &filter, out).await,
        Request::Show { id } => show(relay, &id, out).await,
        Request::Find { query } => find(relay, query.trim(), out).await,
        Request::Reload => {
            let r = crate::daemon::reload::run(relay).await?;
            send(out, &Reply::Reloaded(r)).await?;
            Ok(1)
        }
        Request::OAuthStatus => oauth_status(relay, out).await,
        Request::OAuthToken { source, user } => oauth_token(relay, &source, user, out).await,
        Request::Act { action, selection } => {
            act_on_selection(relay, action, &selection, out).await
        }
    }
}

/// The overview from the counts, at once; then the queued messages the
/// filter shows (damaged ones with their reason), in arrival order, as they
/// are read; then the held routes.
async fn list(
    relay: &Arc<Delivery>,
    filter: &ListFilter,
    out: &mut Out,
) -> Result<usize, RequestError> {
    let shared = &relay.shared;
    let gauges = shared.queue_gauges();
    let overview = Overview {
        counted: gauges.tally.complete,
        tally: gauges.tally,
        oldest: gauges.oldest,
        damaged: shared.metrics.damaged_count(),
        set_aside: shared.metrics.set_aside_count(),
    };
    send(out, &Reply::Overview(overview)).await?;
    out.flush().await?;
    let now = unix_now();
    let mut n = 0;
    for env in shared.spool.messages() {
        if filter.limit.is_some_and(|limit| n >= limit) {
            break;
        }
        let reply = match env {
            Ok(env) => {
                let route = shared.route_name(&env);
                if !filter.matches(&env, &route, now) {
                    continue;
                }
                Reply::Queued(Entry {
                    route,
                    envelope: env,
                })
            }
            // Listed, so the operator can see it and delete it.
            Err(StoreError::Damaged { id, reason }) if filter.shows_damaged() => {
                Reply::Damaged { id, reason }
            }
            Err(StoreError::Damaged { .. }) => continue,
            // A queue that cannot be read must not look empty.
            Err(e) => return Err(e.into()),
        };
        send(out, &reply).await?;
        n += 1;
    }
    for hold in relay.holds.list() {
        send(out, &Reply::RouteHeld(hold)).await?;
    }
    Ok(n)
}

async fn show(relay: &Arc<Delivery>, id: &str, out: &mut Out) -> Result<usize, RequestError> {
    let spool = &relay.shared.spool;
    let loaded = match spool.load(id) {
        Ok(Some(env)) => match spool.body(&env).header_section().await {
            Ok(head) => Ok(Some((env, head))),
            Err(e) => Err(e),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let (env, head) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => return Err(RequestError::NoSuchMessage(id.to_string())),
        Err(StoreError::Damaged { id, reason }) => {
            send(out, &Reply::Damaged { id, reason }).await?;
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let headers = String::from_utf8_lossy(&head).into_owned();
    let entry = Entry {
        route: relay.shared.route_name(&env),
        envelope: env,
    };
    send(out, &Reply::Queued(entry)).await?;
    send(out, &Reply::Headers(headers)).await?;
    Ok(1)
}

async fn find(relay: &Arc<Delivery>, q: &str, out: &mut Out) -> Result<usize, RequestError> {
    let mut n = 0;
    for env in relay.shared.spool.messages().filter_map(Result::ok) {
        if envelope_matches(&env, q) {
            let entry = Entry {
                route: relay.shared.route_name(&env),
                envelope: env,
            };
            send(out, &Reply::Queued(entry)).await?;
            n += 1;
        }
    }
    // Newest first: the most recent fate of a message is the one asked about.
    for f in relay.shared.spool.history().rev() {
        if f.matches(q) {
            send(out, &Reply::Finished(f)).await?;
            n += 1;
        }
    }
    Ok(n)
}

async fn oauth_status(relay: &Arc<Delivery>, out: &mut Out) -> Result<usize, RequestError> {
    let statuses = crate::oauth::cli::check_all(&relay.config(), &relay.shared.tokens).await;
    let mut n = 0;
    for st in statuses {
        send(out, &Reply::TokenStatus(st)).await?;
        n += 1;
    }
    for hold in relay.holds.list() {
        send(out, &Reply::RouteHeld(hold)).await?;
    }
    Ok(n)
}

async fn oauth_token(
    relay: &Arc<Delivery>,
    source: &str,
    user: Option<String>,
    out: &mut Out,
) -> Result<usize, RequestError> {
    let config = relay.config();
    let user = user.unwrap_or_else(|| crate::oauth::cli::user_of(&config, source));
    // The share socket's opt-in, here too: a source hands out tokens only
    // for the accounts its share_as lists.
    let shared = config
        .token_sources
        .get(source)
        .is_some_and(|s| s.share_as.iter().any(|a| a.eq_ignore_ascii_case(&user)));
    if !shared {
        return Err(RequestError::NotShared {
            name: source.to_string(),
            user,
        });
    }
    let b = relay.shared.tokens.bearer(source, &user, false).await?;
    let reply = Reply::AccessToken {
        user: b.user,
        token: b.token.expose().to_string(),
        expires_at: b.expires_at,
    };
    send(out, &reply).await?;
    Ok(1)
}

/// An action on every selected message, reported one line each, in order.
async fn act_on_selection(
    relay: &Arc<Delivery>,
    action: Action,
    selection: &Selection,
    out: &mut Out,
) -> Result<usize, RequestError> {
    if selection.is_empty() {
        return Err(RequestError::NothingSelected);
    }
    if let Some(r) = &selection.route {
        if !relay.config().routes.contains_key(r) {
            return Err(RequestError::NoRoute(r.clone()));
        }
    }
    let mut ids = Selected::new(relay, selection);
    // A bulk flush (all, a route) skips held messages and messages that
    // left meanwhile, as Postfix does; naming them by id is an error.
    let bulk = selection.all || selection.route.is_some();
    // Several messages at a time, so their writes share group commits (a
    // flush of 100,000 queued messages took 30 s one by one).
    let (mut n, mut selected) = (0, 0);
    let mut in_flight = std::collections::VecDeque::new();
    loop {
        while in_flight.len() < ACT_CONCURRENCY {
            let Some(id) = ids.next()? else { break };
            selected += 1;
            let (relay, task_id) = (relay.clone(), id.clone());
            let task = tokio::spawn(async move { act(&relay, &task_id, action).await });
            in_flight.push_back((id, task));
        }
        let Some((id, task)) = in_flight.pop_front() else {
            break;
        };
        let result = task
            .await
            .unwrap_or_else(|e| Err(ActError::Internal(e.to_string())));
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(e @ (ActError::Held | ActError::NotFound)) if bulk => {
                (true, format!("skipped: {e}"))
            }
            Err(e) => (false, e.to_string()),
        };
        n += usize::from(ok);
        send(out, &Reply::Acted { id, ok, detail }).await?;
    }
    if selected == 0 && !selection.ids.is_empty() {
        return Err(RequestError::NoneFound);
    }
    Ok(n)
}

fn envelope_matches(env: &Envelope, q: &str) -> bool {
    let rcpts = env.recipients.iter().map(|r| r.address.as_str());
    crate::spool::history::answers(q, &env.id, env.message_id.as_deref(), &env.sender, rcpts)
}

/// How many messages a bulk action works on at once.
const ACT_CONCURRENCY: usize = 64;

/// The ids a selection names, in queue order: those given, or every
/// message (of a route) read a page at a time, so a flush of a million
/// never holds a million ids.
struct Selected<'a> {
    relay: &'a Delivery,
    selection: &'a Selection,
    page: std::vec::IntoIter<String>,
    after: Option<String>,
    done: bool,
}

impl<'a> Selected<'a> {
    fn new(relay: &'a Delivery, selection: &'a Selection) -> Selected<'a> {
        let bulk = selection.all || selection.route.is_some();
        Selected {
            relay,
            selection,
            // Ids named explicitly: each is reported, found or not.
            page: if bulk {
                Vec::new()
            } else {
                selection.ids.clone()
            }
            .into_iter(),
            after: None,
            done: !bulk,
        }
    }

    fn next(&mut self) -> Result<Option<String>, RequestError> {
        loop {
            if let Some(id) = self.page.next() {
                return Ok(Some(id));
            }
            if self.done {
                return Ok(None);
            }
            let spool = &self.relay.shared.spool;
            let page = spool.ids_after(self.after.as_deref(), 1000)?;
            self.done = page.len() < 1000;
            self.after = page.last().cloned();
            let mut wanted = Vec::with_capacity(page.len());
            for id in page {
                let env = match spool.load(&id) {
                    Ok(Some(env)) => env,
                    // Gone meanwhile; or damaged: on no route and never
                    // flushed in bulk, it is deleted or bounced by its id.
                    Ok(None) | Err(StoreError::Damaged { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                let s = self.selection;
                if s.all
                    || s.route.as_deref() == Some(self.relay.shared.route_name(&env).as_str())
                    || s.ids.contains(&env.id)
                {
                    wanted.push(id);
                }
            }
            self.page = wanted.into_iter();
        }
    }
}

/// One action on one message, under its claim.
async fn act(relay: &Arc<Delivery>, id: &str, action: Action) -> Result<String, ActError> {
    let claim = relay
        .shared
        .spool
        .claim_wait(id, CLAIM_WAIT)
        .await
        .ok_or(ActError::Busy)?;
    let result = act_claimed(relay, id, action).await;
    drop(claim);
    // Scheduled only now that the claim is released: a worker woken while the
    // claim was still held would find the message busy and put it off a second.
    let (detail, reschedule) = result?;
    if let Some(env) = reschedule {
        relay.shared.schedule(&env);
    }
    Ok(detail)
}

#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error("no such message in the queue")]
    NotFound,
    #[error("held; release it first")]
    Held,
    #[error("a delivery attempt is still in progress; try again")]
    Busy,
    #[error("damaged ({0}); it can only be deleted or bounced")]
    Damaged(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Returns the detail for the operator, and the envelope to put back on the
/// schedule once the claim is released.
async fn act_claimed(
    relay: &Arc<Delivery>,
    id: &str,
    action: Action,
) -> Result<(String, Option<Envelope>), ActError> {
    let mut env = match relay.shared.spool.load(id) {
        Ok(env) => env.ok_or(ActError::NotFound)?,
        Err(StoreError::Damaged { reason, .. }) => {
            return act_on_damaged(relay, id, action, reason).await
        }
        Err(e) => return Err(e.into()),
    };
    let route = relay.shared.route_name(&env);
    let now = unix_now();
    let mut reschedule = None;
    match action {
        Action::Flush if env.held => return Err(ActError::Held),
        Action::Flush => {
            relay.shared.spool.flush(&mut env, now).await?;
            reschedule = Some(env);
        }
        Action::Release => {
            relay.shared.spool.release(&mut env, now).await?;
            reschedule = Some(env);
        }
        Action::Hold => {
            relay.shared.spool.hold(&mut env, now).await?;
            relay.shared.scheduler.unschedule(id);
        }
        Action::Delete => {
            relay.shared.spool.delete(&mut env, now).await?;
            relay.shared.metrics.finished(&route, &env, Finish::Deleted);
            relay.shared.scheduler.unschedule(id);
        }
        Action::Bounce => bounce(relay, &mut env, &route, now).await?,
    }
    tracing::info!(id, "{} by the operator", action.past_tense());
    Ok((action.past_tense().to_string(), reschedule))
}

/// The operator gives up on a message: its unfinished recipients bounce and
/// the sender is told.
async fn bounce(
    relay: &Arc<Delivery>,
    env: &mut Envelope,
    route: &str,
    now: u64,
) -> Result<(), ActError> {
    let reason = "bounced by the operator";
    let failed = crate::delivery::record::give_up(env, reason);
    // A message whose body is lost is still bounced; the notice then says
    // what happened without the original attached.
    let sent = crate::delivery::Sent {
        due: &[],
        failed: &failed,
        success: None,
        remote_host: None,
    };
    let mut notices = relay.notices_for(env, &sent, now).await?;
    relay
        .shared
        .spool
        .bounce(env, now, reason, &mut notices)
        .await?;
    relay
        .shared
        .metrics
        .operator_bounced(route, env, failed.len());
    relay.shared.scheduler.unschedule(&env.id);
    for f in &failed {
        if let Some(r) = env.recipients.get(f.index) {
            tracing::info!(
                id = %env.id,
                to = %r.address,
                relay = "none",
                status = "bounced",
                detail = reason,
            );
        }
    }
    relay.notices_stored(&env.id, notices);
    Ok(())
}

/// Delete and bounce take a damaged message out (every record of it). A
/// bounce tells the sender when the envelope is still readable (the notice
/// then carries no part of the lost message), and says so when it is not.
async fn act_on_damaged(
    relay: &Arc<Delivery>,
    id: &str,
    action: Action,
    reason: String,
) -> Result<(String, Option<Envelope>), ActError> {
    if !matches!(action, Action::Delete | Action::Bounce) {
        return Err(ActError::Damaged(reason));
    }
    let readable = relay.shared.spool.readable_envelope(id);
    let detail = match (action, readable) {
        (Action::Bounce, Some(mut env)) => {
            let route = relay.shared.route_name(&env);
            bounce(relay, &mut env, &route, unix_now()).await?;
            "bounced (damaged; the notice could not include the message)"
        }
        (Action::Bounce, None) => {
            "removed; damaged, so no notification could be sent (its envelope is unreadable)"
        }
        _ => "deleted (damaged)",
    };
    // What a bounce left (the quarantine mark), or everything.
    let found = relay.shared.spool.discard(id).await?;
    if !found && action == Action::Delete {
        return Err(ActError::NotFound);
    }
    relay.shared.metrics.damaged_removed();
    tracing::info!(id, "damaged message removed by the operator ({reason})");
    Ok((detail.to_string(), None))
}
