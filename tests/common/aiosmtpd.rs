//! What the aiosmtpd peer tests share: the interpreter that has aiosmtpd, the
//! check that it is installed, a test PKI for its STARTTLS, and the server
//! process itself (tests/peers/aiosmtpd_server.py).
//! Include it with `#[path = "common/aiosmtpd.rs"] mod aiosmtpd;` beside
//! `mod common;`.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Debian installs python3-aiosmtpd for this interpreter; the `python3` first
/// on PATH may be another one without it.
pub const PYTHON: &str = "/usr/bin/python3";

/// (CA certificate, `localhost` certificate signed by it, its key), all PEM.
pub fn test_pki() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "smarthost test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .expect("leaf cert");
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

/// The one account of [`password_peer`], and a password it refuses.
pub const USER: &str = "relay-user@example.com";
pub const PASSWORD: &str = "c0rrect-H0rse-Battery-7731";
pub const WRONG_PASSWORD: &str = "wr0ng-Passw0rd-Zebra-4402";

/// The aiosmtpd peer requiring AUTH (PLAIN or LOGIN, over TLS) as `USER`
/// with `PASSWORD`; with `tls`, STARTTLS is offered and required, without
/// it is not offered at all.
pub fn password_peer(tls: Option<&Files>) -> Peer {
    let mut args: Vec<OsString> = vec![
        "--user".into(),
        USER.into(),
        "--password".into(),
        PASSWORD.into(),
    ];
    if let Some(files) = tls {
        args.extend(files.tls_args());
    }
    Peer::start(args)
}

/// Neither password, nor its base64 forms, may appear in `text`.
pub fn assert_no_password(text: &str) {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [PASSWORD, WRONG_PASSWORD] {
        for form in [
            secret.to_string(),
            b64(secret),
            b64(&format!("\0{USER}\0{secret}")),
        ] {
            assert!(!text.contains(&form), "secret {form:?} in:\n{text}");
        }
    }
}

/// A temporary directory holding the test PKI (`ca.pem`, `cert.pem`,
/// `key.pem`) and whatever secrets a test adds. It exists before the relay
/// starts: the relay reads ca_file and password_file when it loads its config.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = test_pki();
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        Files { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The PKI and both passwords of [`password_peer`]'s account, in `pw`
    /// and `wrong-pw`.
    pub fn with_passwords() -> Files {
        let files = Files::new();
        files.secret("pw", PASSWORD);
        files.secret("wrong-pw", WRONG_PASSWORD);
        files
    }

    /// A secret file as an operator writes it: mode 0600, trailing newline.
    pub fn secret(&self, name: &str, value: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The peer's arguments for STARTTLS with the `localhost` certificate.
    pub fn tls_args(&self) -> Vec<OsString> {
        vec![
            "--cert".into(),
            self.path("cert.pem").into(),
            "--key".into(),
            self.path("key.pem").into(),
        ]
    }
}

pub fn require_aiosmtpd() {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} not found; install it: apt-get install python3 python3-aiosmtpd"
    );
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd.smtp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{PYTHON} cannot import aiosmtpd; install it: apt-get install python3-aiosmtpd"
    );
}

/// The aiosmtpd server process on 127.0.0.1, killed on drop.
pub struct Peer {
    child: Option<Child>,
    pub port: u16,
    out: tempfile::TempDir,
}

impl Peer {
    /// Starts the script with `args` (certificate, accounts; see the script's
    /// doc) and waits until it listens.
    pub fn start<I, S>(args: I) -> Peer
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        require_aiosmtpd();
        let out = tempfile::tempdir().expect("tempdir");
        let port = crate::common::free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aiosmtpd_server.py");
        let stderr = std::fs::File::create(out.path().join("stderr.log")).unwrap();
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--out")
            .arg(out.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn aiosmtpd peer");
        let stdout = child.stdout.take().expect("stdout");
        let mut peer = Peer {
            child: Some(child),
            port,
            out,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if line.trim() == "READY" => {}
            other => {
                peer.kill();
                panic!(
                    "aiosmtpd peer did not become ready ({other:?}); stderr:\n{}",
                    peer.stderr()
                );
            }
        }
        peer
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn events_text(&self) -> String {
        std::fs::read_to_string(self.out.path().join("events.log")).unwrap_or_default()
    }

    /// Every event the server recorded: command verbs, TLS-OK, AUTH-OK/FAIL.
    pub fn events(&self) -> Vec<String> {
        self.events_text().lines().map(str::to_string).collect()
    }

    /// Saved messages as (envelope json, content bytes).
    pub fn messages(&self) -> Vec<(serde_json::Value, Vec<u8>)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|j| {
                let meta = serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
                (meta, std::fs::read(j.with_extension("eml")).unwrap())
            })
            .collect()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}
