//! `smarthost oauth import`: a headless server gets the refresh token of a
//! login done elsewhere (here sasl-xoauth2's token file), and mail leaves
//! with it. Usage mistakes exit 64 (an unknown source, a source with nothing
//! to import into, `oauth login` on a file source, with advice that fits it),
//! an unreadable file 66, a file that holds no token 65 without quoting it.

mod common;
#[path = "common/oauth_peers.rs"]
mod oauth_peers;
#[path = "common/scripted.rs"]
mod scripted;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::Relay;
use oauth_peers::{assert_no_secrets, oauth2_source, Endpoint};
use scripted::ScriptedServer;

const USER: &str = "app@contoso.test";
const REFRESH: &str = "rt-from-workstation-41d0";

fn cli(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smarthost"))
        .arg(args[0])
        .arg("--config")
        .arg(&relay.config_path)
        .args(&args[1..])
        .output()
        .expect("run smarthost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start(ep: &Endpoint, up: &ScriptedServer) -> Relay {
    let body = format!(
        "{source}[[token_source]]\nname = \"f\"\ntype = \"file\"\npath = \"{{dir}}/f-token\"\n\
         [[route]]\nname = \"up\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         allow_plaintext = true\nauth = \"xoauth2\"\nusername = \"{USER}\"\ntoken_source = \"o365\"\n\
         [routing]\ndefault = \"up\"\n",
        source = oauth2_source(&ep.url("/token"), std::path::Path::new("{dir}/o365.json")),
        port = up.port(),
    );
    Relay::start(&body)
}

#[test]
fn oauth_import_brings_a_refresh_token_from_elsewhere() {
    let ep = Endpoint::start();
    ep.add_refresh_token(REFRESH);
    let up = ScriptedServer::start(ep.smtp_script());
    let relay = start(&ep, &up);
    let file = relay.path("sasl-xoauth2.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"access_token":"stale","refresh_token":"{REFRESH}","expiry":"1","user":"{USER}"}}"#
        ),
    )
    .unwrap();

    let (code, out, err) = cli(
        &relay,
        &["oauth", "import", "o365", &file.display().to_string()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("signed in as: {USER}")), "{out}");
    let state = relay.path("o365.json");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !std::fs::read_to_string(&state).unwrap().contains("stale"),
        "expired access token kept"
    );

    let message = format!("From: <{USER}>\r\nSubject: imported\r\n\r\nhi\r\n");
    relay
        .send(USER, &["rcpt@dst.test"], message.as_bytes())
        .expect("queued");
    assert!(
        relay.wait_log("status=sent", 1, Duration::from_secs(20)),
        "{}",
        relay.log()
    );
    let requests = ep.requests();
    assert_eq!(
        requests.first().and_then(|r| r.1.as_deref()),
        Some(REFRESH),
        "{requests:?}"
    );
    let (code, status, _) = cli(&relay, &["oauth", "status"]);
    assert!(
        status.contains(&format!("signed in as: {USER}")),
        "{code} {status}"
    );

    assert_usage_mistakes(&relay);
    let mut secrets = ep.secrets();
    secrets.push(REFRESH.into());
    assert_no_secrets(&relay.log(), &secrets, "relay log");
}

fn assert_usage_mistakes(relay: &Relay) {
    let garbage = relay.path("garbage");
    std::fs::write(&garbage, "not a token at all\n").unwrap();
    let g = garbage.display().to_string();
    let (code, _, err) = cli(relay, &["oauth", "import", "nosuch", &g]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = cli(relay, &["oauth", "import", "f", &g]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = cli(relay, &["oauth", "import", "o365", "/nonexistent/token"]);
    assert_eq!(code, 66, "{err}");
    let (code, _, err) = cli(relay, &["oauth", "import", "o365", &g]);
    assert_eq!(code, 65, "{err}");
    assert!(!err.contains("at all"), "the file's text was shown: {err}");
    let (code, _, err) = cli(relay, &["oauth", "login", "f"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("put a current token in"), "{err}");
}
