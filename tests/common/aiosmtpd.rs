//! What the aiosmtpd peer tests share: the interpreter that has aiosmtpd, the
//! check that it is installed, and a test PKI for its STARTTLS.
//! Include it with `#[path = "common/aiosmtpd.rs"] mod aiosmtpd;`.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

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
