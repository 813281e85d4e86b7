//! The command side of queue control: send a request to the daemon's control
//! or admin socket, and print the answers the way `mailq` users read them.

use super::{render, Access, Action, ListFilter, Reply, Request, Selection};
use crate::config::Local;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the smarthost daemon at {path}: {source} (is `smarthost serve` running?)"
    )]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("not allowed to use {path}: {source} ({what} needs {who})")]
    Denied {
        path: String,
        what: &'static str,
        who: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    #[error("{0}")]
    Failed(String),
}

/// Sends `request` to the socket its access needs (`control.sock` to look,
/// `admin.sock` to act) and hands every item of the answer to `each`; returns
/// the count the daemon reported.
pub fn call(
    local: &Local,
    request: &Request,
    mut each: impl FnMut(Reply) -> std::io::Result<()>,
) -> Result<usize, ClientError> {
    let access = request.access();
    let socket = match access {
        Access::Read => local.control_socket(),
        Access::Admin => local.admin_socket(),
    };
    let path = socket.display().to_string();
    let mut stream = UnixStream::connect(&socket).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::Denied {
                path: path.clone(),
                what: request.what(),
                who: local.who_may(access),
                source,
            }
        } else {
            ClientError::Unreachable {
                path: path.clone(),
                source,
            }
        }
    })?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line?;
        let reply: Reply =
            serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match reply {
            Reply::Done { count, error: None } => return Ok(count),
            Reply::Done { error: Some(e), .. } => return Err(ClientError::Failed(e)),
            other => each(other)?,
        }
    }
    Err(ClientError::Protocol(
        "the daemon closed the connection early".into(),
    ))
}

/// What `smarthost queue ...`, `mailq` and `sendmail -bp`/`-q` ask for.
#[derive(Debug, Clone)]
pub enum Command {
    List {
        json: bool,
        filter: ListFilter,
    },
    Show {
        id: String,
        json: bool,
    },
    Act {
        action: Action,
        selection: Selection,
    },
    Find {
        query: String,
        json: bool,
    },
    /// `smarthost reload`: the daemon re-reads its configuration.
    Reload,
}

/// Runs a queue command, printing to `out`. Returns whether every part of it
/// succeeded (an action on several messages can fail for some).
pub fn run(local: &Local, command: Command, out: &mut dyn Write) -> Result<bool, ClientError> {
    let now = crate::clock::unix_now();
    let json = matches!(
        command,
        Command::List { json: true, .. }
            | Command::Show { json: true, .. }
            | Command::Find { json: true, .. }
    );
    // What people read goes through Printable: a Subject or an address must
    // not drive the terminal. JSON is escaped by its encoder.
    let mut printable = render::Printable(out);
    let out: &mut dyn Write = if json { printable.0 } else { &mut printable };
    match command {
        Command::List { json, filter } => list(local, json, &filter, now, out),
        Command::Show { id, json } => show(local, id, json, now, out),
        Command::Find { query, json } => find(local, &query, json, now, out),
        Command::Reload => reload(local, out),
        Command::Act { action, selection } => act(local, action, selection, out),
    }
}

/// `queue list` / mailq: the whole queue's overview at once, then the
/// messages the filter shows, a summary of them, the damaged ones, the held
/// routes. With `json`, the messages and damaged ones alone, a line each.
fn list(
    local: &Local,
    json: bool,
    filter: &ListFilter,
    now: u64,
    out: &mut dyn Write,
) -> Result<bool, ClientError> {
    let mut summary = render::Summary::default();
    let mut first = true;
    let mut holds = Vec::new();
    let mut damaged = Vec::new();
    let mut queued = 0;
    let listed = call(local, &Request::List(filter.clone()), |reply| match reply {
        Reply::Overview(o) if !json => {
            queued = o.tally.total.messages;
            out.write_all(render::render_overview(&o, now).as_bytes())?;
            // Seen now, before the daemon has read a single message.
            out.flush()
        }
        Reply::RouteHeld(h) => {
            holds.push(h);
            Ok(())
        }
        Reply::Damaged { id, reason } if json => json_line(out, &damaged_json(&id, &reason)),
        Reply::Damaged { id, reason } => {
            damaged.push(render::render_damaged(&id, &reason));
            Ok(())
        }
        Reply::Queued(e) if json => json_line(out, &e),
        Reply::Queued(e) => {
            if first {
                out.write_all(render::LIST_HEADER.as_bytes())?;
                first = false;
            }
            summary.add(&e);
            out.write_all(render::render_entry(&e, now).as_bytes())
        }
        _ => Ok(()),
    })?;
    if !json {
        let matched = !filter.is_empty() || queued > 0;
        out.write_all(summary.render(now, matched).as_bytes())?;
        if let Some(limit) = filter.limit.filter(|l| listed >= *l) {
            writeln!(out, "   (the first {listed} shown: --limit {limit})")?;
        }
        for d in &damaged {
            out.write_all(d.as_bytes())?;
        }
        for h in &holds {
            out.write_all(render::render_route_hold(h, now).as_bytes())?;
        }
    }
    Ok(true)
}

fn damaged_json(id: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({ "id": id, "damaged": reason })
}

/// `queue show`: envelope, history and headers (or why it is damaged).
fn show(
    local: &Local,
    id: String,
    json: bool,
    now: u64,
    out: &mut dyn Write,
) -> Result<bool, ClientError> {
    let mut entry = None;
    let mut headers = String::new();
    let mut damaged = None;
    call(local, &Request::Show { id }, |reply| {
        match reply {
            Reply::Queued(e) => entry = Some(e),
            Reply::Headers(h) => headers = h,
            Reply::Damaged { id, reason } => damaged = Some((id, reason)),
            _ => {}
        }
        Ok(())
    })?;
    if let Some((id, reason)) = damaged {
        if json {
            json_line(out, &damaged_json(&id, &reason))?;
        } else {
            out.write_all(render::render_damaged(&id, &reason).as_bytes())?;
        }
        return Ok(true);
    }
    let Some(e) = entry else {
        return Err(ClientError::Protocol("no message in the answer".into()));
    };
    if json {
        json_line(
            out,
            &serde_json::json!({ "message": e, "headers": headers }),
        )?;
    } else {
        out.write_all(render::render_show(&e, &headers, now).as_bytes())?;
    }
    Ok(true)
}

/// `queue find`: queued matches, then finished ones, newest first.
fn find(
    local: &Local,
    query: &str,
    json: bool,
    now: u64,
    out: &mut dyn Write,
) -> Result<bool, ClientError> {
    let request = Request::Find {
        query: query.to_string(),
    };
    let found = call(local, &request, |reply| match reply {
        Reply::Queued(e) if json => json_line(out, &e),
        Reply::Finished(f) if json => json_line(out, &f),
        Reply::Queued(e) => {
            out.write_all(b"queued: ")?;
            out.write_all(render::render_entry(&e, now).as_bytes())
        }
        Reply::Finished(f) => out.write_all(render::render_finished(&f).as_bytes()),
        _ => Ok(()),
    })?;
    if found == 0 {
        if !json {
            writeln!(out, "{query}: not in the queue nor in the recent history")?;
        }
        return Ok(false);
    }
    Ok(true)
}

fn reload(local: &Local, out: &mut dyn Write) -> Result<bool, ClientError> {
    call(local, &Request::Reload, |reply| {
        let Reply::Reloaded(r) = reply else {
            return Ok(());
        };
        writeln!(
            out,
            "reloaded: {} route(s); {} queued message(s) rescheduled, {} on a new route",
            r.routes, r.queued, r.rerouted
        )?;
        if !r.needs_restart.is_empty() {
            let later = r.needs_restart.join(", ");
            writeln!(out, "not applied until a restart: {later}")?;
        }
        Ok(())
    })?;
    Ok(true)
}

/// An action, one line per message; false if any of them failed.
fn act(
    local: &Local,
    action: Action,
    selection: Selection,
    out: &mut dyn Write,
) -> Result<bool, ClientError> {
    let mut all_ok = true;
    call(local, &Request::Act { action, selection }, |reply| {
        if let Reply::Acted { id, ok, detail } = reply {
            all_ok &= ok;
            if ok {
                writeln!(out, "{id}: {detail}")?;
            } else {
                writeln!(out, "{id}: not {}: {detail}", action.past_tense())?;
            }
        }
        Ok(())
    })?;
    Ok(all_ok)
}

fn json_line<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}
