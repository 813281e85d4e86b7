//! The DSN parameters of RFC 3461: `RET` and `ENVID` on MAIL, `NOTIFY` and
//! `ORCPT` on RCPT, and the xtext they are written in (section 4).
//!
//! Values are kept as the sender wrote them where they are passed upstream
//! unchanged (ORCPT's xtext, the ENVID) and as meaning where the relay acts on
//! them (NOTIFY, RET). Every refusal names its parameter, for `501 5.5.4`.

use serde::{Deserialize, Serialize};

/// Why a DSN parameter was refused; the text is the reply's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Bad {param} parameter: {reason}")]
pub struct ParamError {
    pub param: &'static str,
    pub reason: &'static str,
}

fn bad(param: &'static str, reason: &'static str) -> ParamError {
    ParamError { param, reason }
}

/// RFC 3461 4.4: an ENVID is at most 100 characters (of its xtext).
pub const MAX_ENVID: usize = 100;
/// RFC 3461 4.2: an ORCPT value is at most 500 characters.
pub const MAX_ORCPT: usize = 500;

/// Decodes xtext: printable ASCII but `+` and `=`, with `+XX` (two
/// upper-case hex digits) for any octet.
pub fn xtext_decode(s: &str) -> Result<Vec<u8>, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => {
                let hex = b.get(i + 1..i + 3).ok_or("a '+' without two hex digits")?;
                let digit = |d: u8| match d {
                    b'0'..=b'9' => Some(d - b'0'),
                    b'A'..=b'F' => Some(d - b'A' + 10),
                    _ => None,
                };
                match (digit(hex[0]), digit(hex[1])) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err("a '+' not followed by two upper-case hex digits"),
                }
                i += 3;
            }
            b'!'..=b'~' if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return Err("a character xtext does not allow"),
        }
    }
    Ok(out)
}

/// Encodes octets as xtext.
pub fn xtext_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        if (b'!'..=b'~').contains(&c) && c != b'+' && c != b'=' {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("+{c:02X}"));
        }
    }
    out
}

/// NOTIFY: which notices a recipient wants. All false is `NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub success: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failure: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay: bool,
}

impl Notify {
    /// `NEVER`, or a comma-separated list of `SUCCESS`, `FAILURE`, `DELAY`
    /// (any case, each once).
    pub fn parse(v: &str) -> Result<Notify, ParamError> {
        let err = |r| bad("NOTIFY", r);
        if v.eq_ignore_ascii_case("NEVER") {
            return Ok(Notify::never());
        }
        let mut n = Notify::never();
        for word in v.split(',') {
            let flag = match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => &mut n.success,
                "FAILURE" => &mut n.failure,
                "DELAY" => &mut n.delay,
                "NEVER" => return Err(err("NEVER cannot be combined")),
                _ => return Err(err("not SUCCESS, FAILURE, DELAY or NEVER")),
            };
            if *flag {
                return Err(err("a keyword given twice"));
            }
            *flag = true;
        }
        Ok(n)
    }

    pub fn never() -> Notify {
        Notify {
            success: false,
            failure: false,
            delay: false,
        }
    }

    pub fn is_never(&self) -> bool {
        !(self.success || self.failure || self.delay)
    }

    /// The parameter's value, as passed upstream.
    pub fn value(&self) -> String {
        if self.is_never() {
            return "NEVER".into();
        }
        let words = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let on: Vec<&str> = words.iter().filter(|w| w.0).map(|w| w.1).collect();
        on.join(",")
    }
}

/// RET: what a failure notice returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn parse(v: &str) -> Result<Ret, ParamError> {
        match v.to_ascii_uppercase().as_str() {
            "FULL" => Ok(Ret::Full),
            "HDRS" => Ok(Ret::Hdrs),
            _ => Err(bad("RET", "not FULL or HDRS")),
        }
    }

    pub fn value(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// ENVID, as the sender wrote it (xtext); it decodes to printable ASCII.
pub fn parse_envid(v: &str) -> Result<String, ParamError> {
    if v.is_empty() || v.len() > MAX_ENVID {
        return Err(bad("ENVID", "empty or longer than 100 characters"));
    }
    let decoded = xtext_decode(v).map_err(|r| bad("ENVID", r))?;
    if !decoded.iter().all(|&c| (b' '..=b'~').contains(&c)) {
        return Err(bad("ENVID", "not printable ASCII once decoded"));
    }
    Ok(v.to_string())
}

/// ORCPT: the address type and the address (xtext), as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orcpt {
    pub addr_type: String,
    pub xtext: String,
}

impl Orcpt {
    /// `addr-type ";" xtext`, at most 500 characters; the address type is an
    /// atom, and the address decodes to text with no control characters.
    pub fn parse(v: &str) -> Result<Orcpt, ParamError> {
        let err = |r| bad("ORCPT", r);
        if v.len() > MAX_ORCPT {
            return Err(err("longer than 500 characters"));
        }
        let (addr_type, xtext) = v
            .split_once(';')
            .ok_or(err("no ';' after the address type"))?;
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
        if addr_type.is_empty() || !addr_type.chars().all(atext) {
            return Err(err("the address type is not an atom"));
        }
        let decoded = xtext_decode(xtext).map_err(err)?;
        let text = String::from_utf8(decoded).map_err(|_| err("not UTF-8 once decoded"))?;
        if text.is_empty() || text.chars().any(char::is_control) {
            return Err(err("empty, or control characters once decoded"));
        }
        Ok(Orcpt {
            addr_type: addr_type.to_string(),
            xtext: xtext.to_string(),
        })
    }

    /// The parameter's value, as passed upstream unchanged.
    pub fn value(&self) -> String {
        format!("{};{}", self.addr_type, self.xtext)
    }

    /// The address, decoded, for `Original-Recipient:`.
    pub fn address(&self) -> String {
        xtext_decode(&self.xtext)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
