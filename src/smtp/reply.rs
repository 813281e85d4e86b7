//! An SMTP reply as a value: code, enhanced status code (RFC 3463, 2034) and
//! text, and its wire form.

/// An SMTP reply the session sends: code, optional enhanced status (RFC 3463/2034), text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<&'static str>,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<&'static str>, text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            code,
            enhanced,
            text,
        }
    }

    /// Wire form, "250 2.1.0 Ok\r\n"; one reply line per '\n' in the text
    /// ("250-...\r\n250 ...\r\n"), with the enhanced code on every line
    /// (RFC 2034 wants it on each) when `enhanced_codes` is true.
    pub fn to_wire(&self, enhanced_codes: bool) -> Vec<u8> {
        let enhanced = self.enhanced.filter(|_| enhanced_codes).unwrap_or("");
        let text = self.text.trim_end_matches(['\r', '\n']);
        let last = text.split('\n').count().saturating_sub(1);
        let mut out = Vec::with_capacity(text.len() + 16);
        for (i, line) in text.split('\n').enumerate() {
            // Text may echo client input; a stray CR or control byte must not
            // be able to forge extra reply lines.
            let clean: String = line
                .chars()
                .filter(|&c| c != '\r')
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let sep = if i < last { '-' } else { ' ' };
            let line = format!("{}{sep}{}", self.code, format!("{enhanced} {clean}").trim());
            // RFC 5321 allows a bare "250" as a last line, not "250 ".
            out.extend_from_slice(line.trim_end_matches(' ').as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}
