//! A one-line summary of a server certificate for the test-send transcript:
//! subject, issuer and expiry, read from the DER with just enough of a
//! parser for those three fields (RFC 5280 4.1). rustls has verified the
//! certificate already; this only describes it, and gives up (None) on
//! anything it does not expect rather than guess.

/// What the transcript says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `CN=localhost` or `C=US, O=Let's Encrypt, CN=R11`, in certificate order.
    pub subject: String,
    pub issuer: String,
    /// notAfter, in Unix seconds.
    pub not_after: i64,
}

impl Summary {
    /// `subject CN=x, issuer CN=y, expires 2027-01-01 (in 365 days)`.
    pub fn describe(&self, now: i64) -> String {
        let days = (self.not_after - now).div_euclid(86_400);
        let when = if self.not_after < now {
            "EXPIRED".to_string()
        } else {
            format!("in {days} days")
        };
        format!(
            "subject {}, issuer {}, expires {} ({when})",
            self.subject,
            self.issuer,
            date(self.not_after)
        )
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Reads one DER element: (tag, contents, the rest).
fn element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(data)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// Subject, issuer and notAfter of a DER certificate.
pub fn summary(der: &[u8]) -> Option<Summary> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if let Some((VERSION, _, after)) = element(rest) {
        rest = after;
    }
    let (_, rest) = expect(rest, INTEGER)?;
    let (_, rest) = expect(rest, SEQUENCE)?; // signature algorithm
    let (issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, not_after, _) = element(after)?;
    Some(Summary {
        subject: name(subject)?,
        issuer: name(issuer)?,
        not_after: time(tag, not_after)?,
    })
}

/// An X.501 Name: the attributes we have short names for, in order.
fn name(mut rdns: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (atv, rest) = expect(atvs, SEQUENCE)?;
            atvs = rest;
            let (oid, value) = expect(atv, OID)?;
            let (tag, value, _) = element(value)?;
            if let Some(short) = short_name(oid) {
                parts.push(format!("{short}={}", text(tag, value)));
            }
        }
    }
    Some(if parts.is_empty() {
        "(no name)".to_string()
    } else {
        parts.join(", ")
    })
}

/// id-at (2.5.4.x) attributes an operator recognises.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x06] => Some("C"),
        [0x55, 0x04, 0x07] => Some("L"),
        [0x55, 0x04, 0x08] => Some("ST"),
        [0x55, 0x04, 0x0a] => Some("O"),
        [0x55, 0x04, 0x0b] => Some("OU"),
        _ => None,
    }
}

/// A DirectoryString as printable text.
fn text(tag: u8, value: &[u8]) -> String {
    let s = match tag {
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = value
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        // T61String: Latin-1 in practice.
        0x14 => value.iter().map(|&b| char::from(b)).collect(),
        _ => String::from_utf8_lossy(value).into_owned(),
    };
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// UTCTime (`YYMMDDHHMMSSZ`, RFC 5280 4.1.2.5.1: 50-99 are 19xx) or
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn time(tag: u8, value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if s.len() == 12 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 14 => (s.get(..4)?.parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest.get(i..i + 2).and_then(|x| x.parse::<i64>().ok());
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2027-01-01` for Unix seconds (the inverse, `civil_from_days`).
fn date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(days_from_civil(4096, 1, 1) * 86_400), "4096-01-01");
        assert_eq!(date(-86_400), "1969-12-31");
    }

    #[test]
    fn times() {
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            time(GENERALIZED_TIME, b"20000229120000Z"),
            Some(951_782_400 + 12 * 3600)
        );
        assert_eq!(time(UTC_TIME, b"700101000000+0100"), None);
        assert_eq!(time(GENERALIZED_TIME, b"2000022912000Z"), None);
        assert_eq!(time(0x04, b"700101000000Z"), None);
    }

    #[test]
    fn rcgen_certificate() {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::OrganizationName, "Example Ltd");
        ca.distinguished_name.push(DnType::CommonName, "Test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".into()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.not_after = rcgen::date_time_ymd(2031, 7, 14);
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();

        let s = summary(cert.der()).expect("parsed");
        assert_eq!(s.subject, "CN=localhost");
        assert_eq!(s.issuer, "CN=Test CA, O=Example Ltd");
        assert_eq!(date(s.not_after), "2031-07-14");
        let now = days_from_civil(2031, 7, 4) * 86_400;
        assert_eq!(
            s.describe(now),
            "subject CN=localhost, issuer CN=Test CA, O=Example Ltd, expires 2031-07-14 (in 10 days)"
        );
        assert!(s.describe(s.not_after + 1).ends_with("(EXPIRED)"));
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(summary(b""), None);
        assert_eq!(summary(&[0x30, 0x82, 0xff]), None);
        assert_eq!(summary(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        assert_eq!(summary(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
    }
}
