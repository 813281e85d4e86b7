//! The daemon (`smarthost serve`): opens the queue, binds or takes over the
//! listeners, starts the workers and the local servers, and runs until stopped.

use std::path::Path;
use std::sync::Arc;

pub mod logging;
pub mod memory;
pub mod metrics_http;
pub mod reload;
pub mod shared;
pub mod syslog;
pub mod systemd;

use std::time::Duration;

use crate::config::Config;
use crate::control::{self, server::bind_socket};
use crate::delivery::Delivery;
use crate::dropdir;
use crate::smtp::server;
use crate::spool::{Spool, StoreError};
use crate::sysexits::*;
pub use logging::LogFormat;

pub fn run(path: &Path, log_format: LogFormat) -> u8 {
    memory::limit_arenas();
    // One provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // SIGHUP re-reads this file: made absolute, so the answer does not depend
    // on the working directory at the time.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let config = match Config::load(&path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return EX_CONFIG;
        }
    };
    // After the configuration, which says whether syslog gets the log too.
    logging::init(log_format, config.syslog.as_ref());
    // Taken before any thread exists: nothing else may own these descriptors.
    let activated = match systemd::activated_listeners() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return EX_OSERR;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return EX_OSERR;
        }
    };
    runtime.block_on(serve(config, activated))
}

/// The listeners: the configured (or socket-activated) TCP ones, the
/// submission socket and the control socket.
struct Listeners {
    tcp: Vec<tokio::net::TcpListener>,
    /// Each with the index of its `[[submission]]` entry.
    submission: Vec<(tokio::net::TcpListener, usize)>,
    submit: tokio::net::UnixListener,
    control: tokio::net::UnixListener,
    admin: tokio::net::UnixListener,
}

async fn serve(config: Arc<Config>, activated: Option<Vec<(std::net::TcpListener, String)>>) -> u8 {
    let relay = match open(&config) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let queued = match relay.shared.load_queue() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cannot read queue: {e}");
            return EX_CANTCREAT;
        }
    };
    let listeners = match bind(&config, activated).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = start_sharing(&relay).await {
        return code;
    }
    if let Err(e) = metrics_http::start(&relay, config.metrics.as_ref()).await {
        tracing::error!("{e}");
        return EX_OSERR;
    }
    // Before anything starts: a certificate that cannot be loaded stops here.
    let contexts = match submission_contexts(&config).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let sessions = match start(&relay, &config, (listeners, contexts), queued).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    until_stopped(&relay, sessions).await
}

/// The spool and delivery's state; the exit code if either cannot be had.
fn open(config: &Arc<Config>) -> Result<Arc<Delivery>, u8> {
    let router = crate::daemon::shared::router(config);
    let spool = match Spool::open_routed(&config.queue_path, config.queue_cache_size, router) {
        Ok(s) => s,
        // Documented in the README ("When the queue cannot be opened").
        Err(e @ StoreError::Unopenable { .. }) => {
            tracing::error!("{e}");
            return Err(EX_DATAERR);
        }
        Err(e) => {
            tracing::error!("cannot open queue {}: {e}", config.queue_path.display());
            return Err(EX_CANTCREAT);
        }
    };
    let relay = Delivery::new(config.clone(), spool).map_err(|e| {
        tracing::error!("{e}");
        EX_CONFIG
    })?;
    relay.load_holds();
    Ok(relay)
}

async fn bind(
    config: &Config,
    activated: Option<Vec<(std::net::TcpListener, String)>>,
) -> Result<Listeners, u8> {
    let (tcp, submission) = match activated {
        Some(sockets) => activated_tcp(config, sockets)?,
        None => bound_tcp(config).await?,
    };
    let local = &config.local;
    let submit = bind_socket(&local.submit_socket(), 0o666, None).map_err(|e| {
        tracing::error!("submission socket {}: {e}", local.submit_socket().display());
        EX_OSERR
    })?;
    let group = local.control_group.as_deref();
    let control = bind_socket(&local.control_socket(), 0o660, group).map_err(|e| {
        tracing::error!("control socket {}: {e}", local.control_socket().display());
        EX_OSERR
    })?;
    // Without admin_group only root and the daemon's own user may act.
    let (mode, group) = match local.admin_group.as_deref() {
        Some(g) => (0o660, Some(g)),
        None => (0o600, None),
    };
    let admin = bind_socket(&local.admin_socket(), mode, group).map_err(|e| {
        tracing::error!("admin socket {}: {e}", local.admin_socket().display());
        EX_OSERR
    })?;
    Ok(Listeners {
        tcp,
        submission,
        submit,
        control,
        admin,
    })
}

type Tcp = (
    Vec<tokio::net::TcpListener>,
    Vec<(tokio::net::TcpListener, usize)>,
);

/// The sockets systemd passed, sorted by their `FileDescriptorName=`: a
/// `[[submission]]` entry's name makes a submission listener, any other
/// name a plain one.
fn activated_tcp(
    config: &Config,
    sockets: Vec<(std::net::TcpListener, String)>,
) -> Result<Tcp, u8> {
    let (mut tcp, mut submission) = (Vec::new(), Vec::new());
    for (s, name) in sockets {
        let l = tokio::net::TcpListener::from_std(s).map_err(|e| {
            tracing::error!("socket activation: {e}");
            EX_OSERR
        })?;
        match config
            .submission
            .listeners
            .iter()
            .position(|sub| sub.name == name)
        {
            Some(i) => submission.push((l, i)),
            None => tcp.push(l),
        }
    }
    for (i, sub) in config.submission.listeners.iter().enumerate() {
        if !submission.iter().any(|(_, j)| *j == i) {
            tracing::warn!(
                "submission listener {}: systemd passed no socket named {0:?} (FileDescriptorName=); it is not served",
                sub.name
            );
        }
    }
    tracing::info!("socket-activated: the listen settings are not used");
    Ok((tcp, submission))
}

/// The configured addresses, bound by the daemon itself.
async fn bound_tcp(config: &Config) -> Result<Tcp, u8> {
    let fail = |e: std::io::Error| {
        tracing::error!("{e}");
        EX_OSERR
    };
    let tcp = server::bind(&config.listen).await.map_err(fail)?;
    let mut submission = Vec::new();
    for (i, sub) in config.submission.listeners.iter().enumerate() {
        for l in server::bind(&sub.listen).await.map_err(fail)? {
            submission.push((l, i));
        }
    }
    Ok((tcp, submission))
}

/// What each submission listener's sessions share: its certificate (loaded
/// now, so a missing or unreadable one stops the start), the passwd-file
/// check and the failed-login throttle (one for all listeners).
async fn submission_contexts(
    config: &Config,
) -> Result<Vec<Arc<crate::smtp::submission::SubmissionCtx>>, u8> {
    use crate::smtp::submission::{SubmissionCtx, Throttle};
    let sub = &config.submission;
    let Some(passwd) = &sub.passwd_file else {
        return Ok(Vec::new());
    };
    let verifier = Arc::new(crate::auth::Verifier::new(passwd));
    let throttle = Arc::new(Throttle::default());
    let rates = Arc::new(crate::smtp::submission::IdentityRates::default());
    let mut out = Vec::new();
    for l in &sub.listeners {
        let certs = crate::smtp::tls::CertStore::load(&l.cert, &l.key).map_err(|e| {
            tracing::error!("submission listener {}: {e}", l.name);
            EX_CONFIG
        })?;
        out.push(Arc::new(SubmissionCtx {
            tls: l.tls,
            acceptor: certs.acceptor(),
            certs,
            verifier: verifier.clone(),
            throttle: throttle.clone(),
            rates: rates.clone(),
        }));
    }
    Ok(out)
}

type Contexts = Vec<Arc<crate::smtp::submission::SubmissionCtx>>;

/// The SMTP listeners' task, and their addresses for the ready line.
fn spawn_sessions(
    intake: crate::intake::Intake,
    (tcp, submission): Tcp,
    submit: tokio::net::UnixListener,
    contexts: &Contexts,
) -> (tokio::task::JoinHandle<()>, Vec<String>) {
    let addr = |l: &tokio::net::TcpListener| l.local_addr().ok();
    let addrs = tcp
        .iter()
        .filter_map(addr)
        .map(|a| a.to_string())
        .chain(
            submission
                .iter()
                .filter_map(|(l, _)| addr(l))
                .map(|a| format!("{a} (submission)")),
        )
        .collect();
    let submission = submission
        .into_iter()
        .filter_map(|(l, i)| contexts.get(i).map(|c| (l, c.clone())))
        .collect();
    let sessions = tokio::spawn(server::serve(intake, tcp, Some(submit), submission));
    (sessions, addrs)
}

/// Starts the workers, the background tasks (the drop directory's pickup
/// among them) and the sessions, and says "ready"; the sessions' task.
async fn start(
    relay: &Arc<Delivery>,
    config: &Config,
    (listeners, contexts): (Listeners, Contexts),
    queued: u64,
) -> Result<tokio::task::JoinHandle<()>, u8> {
    let local = &config.local;
    if let Err(e) = dropdir::prepare(&local.drop_dir) {
        // sendmail still works through the socket; only the fallback is lost.
        tracing::warn!("drop directory {}: {e}", local.drop_dir.display());
    }
    // Mail dropped while the daemon was down is picked up at once, by a task
    // of its own: readiness and shutdown never wait for what sits in a
    // directory others can write.
    let intake = crate::intake::Intake::new(relay.shared.clone());
    dropdir::recount_set_aside(&intake);
    relay.spawn_workers();
    tokio::spawn(dropdir::run(intake.clone()));
    let Listeners {
        tcp,
        submission,
        submit,
        control,
        admin,
    } = listeners;
    tokio::spawn(control::server::serve(
        relay.clone(),
        control,
        control::Access::Read,
    ));
    tokio::spawn(control::server::serve(
        relay.clone(),
        admin,
        control::Access::Admin,
    ));
    tokio::spawn(prune_history(relay.clone()));
    tokio::spawn(sweep_bodies(relay.clone()));
    tokio::spawn(reschedule_on_reopen(relay.clone()));
    tokio::spawn(refill_schedule(relay.clone()));
    tokio::spawn(relay.clone().watch_holds());
    tokio::spawn(keep_tokens_alive(relay.clone()));
    let (sessions, addrs) = spawn_sessions(intake, (tcp, submission), submit, &contexts);
    tracing::info!(
        "smarthost ready: listening on {} and {} with {} queued message(s)",
        addrs.join(", "),
        local.submit_socket().display(),
        queued
    );
    systemd::ready(&status_line(relay));
    relay.shared.metrics.set_ready();
    tokio::spawn(audit(relay.clone()));
    // Loading the queue allocated and freed a lot: start small.
    memory::trim();
    tokio::spawn(memory::trim_periodically());
    tokio::spawn(report_status(relay.clone()));
    if let Some(every) = systemd::watchdog_interval() {
        tokio::spawn(watchdog(relay.clone(), every));
    }
    Ok(sessions)
}

/// Serves until SIGTERM (reloading on SIGHUP), then stops gracefully.
async fn until_stopped(relay: &Arc<Delivery>, mut sessions: tokio::task::JoinHandle<()>) -> u8 {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot handle signals: {e}");
            return EX_OSERR;
        }
    };
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Reload => {
                    // The outcome is logged by reload::run; a refused config
                    // leaves the old one serving.
                    let _ = reload::run(relay).await;
                }
                Signal::Stop => break,
            },
            _ = &mut sessions => {
                tracing::error!("the listeners stopped unexpectedly");
                break;
            }
        }
    }
    stop(relay, sessions).await;
    EX_OK
}

/// How long a stop waits for open transactions and attempts in flight; below
/// the unit's `TimeoutStopSec=30`, so systemd never has to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// SIGTERM: stop accepting, let sessions finish the transaction they have open
/// and workers the attempt they are in, within [`STOP_GRACE`]. Whatever is
/// still running then is cut off; nothing it had not acknowledged was promised,
/// and everything queued stays queued for the next start.
async fn stop(relay: &Arc<Delivery>, sessions: tokio::task::JoinHandle<()>) {
    systemd::stopping("stopping: finishing open transactions and attempts");
    tracing::info!(
        "stopping: no new connections; finishing open transactions and attempts (at most {}s)",
        STOP_GRACE.as_secs()
    );
    relay.stop();
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    let sessions_done = tokio::time::timeout_at(deadline, sessions).await.is_ok();
    let attempts_done = relay
        .idle_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    if let Err(e) = relay.shared.spool.commit().await {
        tracing::error!("final queue flush: {e}");
    }
    match (sessions_done, attempts_done) {
        (true, true) => tracing::info!("stopped; queued mail stays queued"),
        _ => tracing::warn!(
            "stopped after {}s with {}{} still running; their messages stay queued",
            STOP_GRACE.as_secs(),
            if sessions_done { "" } else { "sessions" },
            match (sessions_done, attempts_done) {
                (false, false) => " and attempts",
                (true, false) => "attempts",
                _ => "",
            }
        ),
    }
}

/// After the queue was reopened following an I/O error (a full disk, see
/// `spool::store`), writes that were not synced are gone: the schedule is
/// rebuilt from what is on disk, rather than waiting for each failed attempt's
/// own retry.
async fn reschedule_on_reopen(relay: Arc<Delivery>) {
    let mut reopened = relay.shared.spool.reopened();
    while reopened.changed().await.is_ok() {
        // Writes not synced are gone: the counts cannot be trusted.
        relay.shared.spool.recount_later();
        let shared = relay.shared.clone();
        match tokio::task::spawn_blocking(move || shared.load_queue()).await {
            Ok(Ok(_)) => tracing::info!("queue reopened: scheduled again from its due index"),
            Ok(Err(e)) => tracing::error!("queue reopened but cannot be read: {e}"),
            Err(e) => tracing::error!("queue reopened; scheduling it again failed: {e}"),
        }
        audit(relay.clone()).await;
    }
}

/// Counts the queue again and repairs its due index where it must (see
/// `Shared::audit`), beside the running daemon. A queue that cannot be
/// read now is audited at its next reopen.
async fn audit(relay: Arc<Delivery>) {
    let shared = relay.shared.clone();
    match tokio::task::spawn_blocking(move || shared.audit()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("cannot count the queue: {e}"),
        Err(e) => tracing::error!("counting the queue failed: {e}"),
    }
}

/// Reads the queue's due index into the schedule's window whenever the
/// window has room (see `delivery::scheduler`). A queue that cannot be read
/// is tried again after a while, or at once when it is reopened.
async fn refill_schedule(relay: Arc<Delivery>) {
    let mut reopened = relay.shared.spool.reopened();
    loop {
        relay.shared.scheduler.wait_refill().await;
        let shared = relay.shared.clone();
        let read = tokio::task::spawn_blocking(move || shared.refill()).await;
        if let Ok(Err(e)) = read {
            tracing::error!("cannot read the queue's due index: {e}; trying again in 10s");
            let _ = tokio::time::timeout(Duration::from_secs(10), reopened.changed()).await;
        }
    }
}

/// One line for `systemctl status`: what is queued and what needs the operator.
fn status_line(relay: &Delivery) -> String {
    let queued = relay.shared.spool.tally().total.messages;
    let held: Vec<String> = relay.holds.list().into_iter().map(|h| h.route).collect();
    if held.is_empty() {
        format!("relaying; {queued} message(s) queued for delivery")
    } else {
        format!(
            "relaying; {queued} message(s) queued for delivery; route(s) HELD: {} (see `smarthost oauth status`)",
            held.join(", ")
        )
    }
}

async fn report_status(relay: Arc<Delivery>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if relay.shared.is_stopping() {
            return;
        }
        let now = status_line(&relay);
        if now != last {
            systemd::status(&now);
            last = now;
        }
    }
}

/// Pings systemd's watchdog only while the relay works: the runtime runs timers,
/// the queue's committer answers a commit, and the scheduler's locks can be taken.
/// If any of them hangs, the pings stop and systemd restarts the daemon
/// (`WatchdogSec=`); a restart loses nothing that was acknowledged. A commit
/// that fails (a full disk) is an answer: clients get `452`, the queue reopens
/// itself once space returns, and a restart would not help.
async fn watchdog(relay: Arc<Delivery>, every: Duration) {
    let period = every / 2;
    loop {
        let healthy = tokio::time::timeout(period, async {
            let _answered = relay.shared.spool.commit().await;
            let _ = relay.shared.scheduler.in_memory();
        })
        .await
        .is_ok();
        if healthy {
            systemd::watchdog();
        } else {
            tracing::error!(
                "watchdog: the queue did not answer within {}s; not telling systemd we are alive",
                period.as_secs()
            );
        }
        tokio::time::sleep(period).await;
    }
}

enum Signal {
    Reload,
    Stop,
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
        }
    }
}

/// Forgets finished messages past their retention hourly (recounting them),
/// and as soon as there are 5% more than `history_max`: at thousands of
/// messages a second an hour's history is millions of records, which the
/// queue's disk would hold.
async fn prune_history(relay: Arc<Delivery>) {
    const LOOK_EVERY: Duration = Duration::from_secs(2);
    const HOURLY: u32 = 1800;
    let mut ticks = 0;
    loop {
        let local = relay.config().local.clone();
        let over = relay.shared.spool.history_len() > local.history_max + local.history_max / 20;
        if ticks == 0 || over {
            let cutoff = crate::clock::unix_now().saturating_sub(local.history.as_secs());
            let store = relay.shared.spool.clone();
            let (max, recount) = (local.history_max, ticks == 0);
            let prune = move || store.prune_history(cutoff, max, recount);
            match tokio::task::spawn_blocking(prune).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::debug!("forgot {n} finished message(s)"),
                Ok(Err(e)) => tracing::warn!("pruning message history: {e}"),
                Err(e) => tracing::warn!("pruning message history: {e}"),
            }
        }
        ticks = (ticks + 1) % HOURLY;
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Removes body files no message owns (a failed commit, a session dropped
/// while it created its file) every few minutes, not only at the next
/// start: on a disk that filled up, that space matters.
async fn sweep_bodies(relay: Arc<Delivery>) {
    const EVERY: Duration = Duration::from_secs(300);
    loop {
        tokio::time::sleep(EVERY).await;
        let spool = relay.shared.spool.clone();
        match tokio::task::spawn_blocking(move || spool.sweep_bodies()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("sweeping body files: {e}"),
            Err(e) => tracing::warn!("sweeping body files: {e}"),
        }
    }
}

/// The optional servers that hand this daemon's tokens to other local programs.
async fn start_sharing(relay: &Arc<Delivery>) -> Result<(), u8> {
    use crate::oauth::share;
    let o = &relay.config().oauth;
    let sources = relay.config().token_sources.clone();
    if let Some(path) = &o.share_socket {
        let listener = bind_socket(path, 0o660, o.share_group.as_deref()).map_err(|e| {
            tracing::error!("oauth.share_socket {}: {e}", path.display());
            EX_OSERR
        })?;
        tracing::info!("sharing tokens on {}", path.display());
        tokio::spawn(share::serve_socket(
            listener,
            relay.shared.tokens.clone(),
            sources.clone(),
        ));
    }
    if let (Some(addr), Some(password)) = (o.share_http, &o.share_http_password) {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            tracing::error!("oauth.share_http {addr}: {e}");
            EX_OSERR
        })?;
        tracing::info!("sharing tokens over HTTP on {addr}");
        tokio::spawn(share::serve_http(
            listener,
            relay.shared.tokens.clone(),
            sources,
            password.clone(),
        ));
    }
    Ok(())
}

/// Exchanges idle refresh tokens before the provider forgets them, hourly.
async fn keep_tokens_alive(relay: Arc<Delivery>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        relay.shared.tokens.keepalive().await;
        tokio::time::sleep(std::time::Duration::from_secs(3540)).await;
    }
}
