//! A line-by-line walk through a message's MIME structure (RFC 2045, 2046):
//! which entity each line belongs to, and whether it is a header field, the
//! end of a header section, body, or a boundary delimiter. Used twice per
//! message, by the scan and by the conversion, so both see the same tree.

/// What an entity is, as far as conversion cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `text/*`, or no Content-Type (RFC 2045 5.2: text/plain).
    Text,
    Multipart,
    /// `message/rfc822` (or `message/global`): a nested message follows.
    Message,
    Other,
}

/// Content-Transfer-Encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cte {
    /// 7bit, 8bit, binary, or none given: the body is as it is.
    Identity,
    /// quoted-printable, base64 or something unknown: already encoded.
    Encoded,
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub kind: Kind,
    pub cte: Cte,
    /// Inside a `multipart/signed`: nothing in it may change.
    pub signed: bool,
    /// The message's own header section (not a part's).
    pub top: bool,
    pub has_mime_version: bool,
    pub has_content_type: bool,
    boundary: Option<Vec<u8>>,
}

/// What one line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A header field line of entity `.0`; `.1` is whether it belongs to a
    /// Content-Transfer-Encoding field (the conversion replaces those).
    Header(usize, bool),
    /// The empty line that ends entity `.0`'s header section.
    HeaderEnd(usize),
    /// Body of leaf entity `.0`.
    Body(usize),
    /// Preamble or epilogue of multipart entity `.0`.
    Filler(usize),
    /// A boundary delimiter line.
    Delimiter,
}

/// Header sections longer than this are not parsed further (a bound on
/// memory; what was seen decides).
const MAX_HEADER: usize = 256 * 1024;

pub struct Walker {
    pub entities: Vec<Entity>,
    /// Open entities, innermost last.
    stack: Vec<usize>,
    /// The entity whose header is being read, and its fields so far.
    header: Option<(usize, Vec<u8>)>,
    in_cte: bool,
}

impl Walker {
    pub fn new() -> Walker {
        let mut w = Walker {
            entities: Vec::new(),
            stack: Vec::new(),
            header: None,
            in_cte: false,
        };
        w.open(true, false);
        w
    }

    fn open(&mut self, top: bool, signed: bool) -> usize {
        let id = self.entities.len();
        self.entities.push(Entity {
            kind: Kind::Text,
            cte: Cte::Identity,
            signed,
            top,
            has_mime_version: false,
            has_content_type: false,
            boundary: None,
        });
        self.header = Some((id, Vec::new()));
        self.in_cte = false;
        id
    }

    /// Classifies one line (without its CRLF).
    pub fn line(&mut self, line: &[u8]) -> Line {
        if let Some((id, fields)) = &mut self.header {
            let id = *id;
            if line.is_empty() {
                let fields = std::mem::take(fields);
                self.header = None;
                self.end_header(id, &fields);
                return Line::HeaderEnd(id);
            }
            if !line.starts_with(b" ") && !line.starts_with(b"\t") {
                self.in_cte = field_name_is(line, b"content-transfer-encoding");
            }
            if fields.len() + line.len() < MAX_HEADER {
                fields.extend_from_slice(line);
                fields.extend_from_slice(b"\r\n");
            }
            return Line::Header(id, self.in_cte);
        }
        if let Some(depth) = self.delimiter_depth(line) {
            self.delimiter(depth, line);
            return Line::Delimiter;
        }
        let Some(&id) = self.stack.last() else {
            return Line::Filler(0);
        };
        match self.entities[id].kind {
            Kind::Multipart => Line::Filler(id),
            _ => Line::Body(id),
        }
    }

    fn end_header(&mut self, id: usize, fields: &[u8]) {
        let parsed = parse_header(fields);
        let parent_signed = self.entities[id].signed;
        let e = &mut self.entities[id];
        e.has_mime_version = parsed.mime_version;
        e.has_content_type = parsed.content_type.is_some();
        e.cte = parsed.cte;
        let (kind, signed, boundary) = match parsed.content_type {
            Some(ct) => classify(&ct),
            None => (Kind::Text, false, None),
        };
        e.kind = kind;
        e.signed = parent_signed || signed;
        e.boundary = boundary;
        if e.kind == Kind::Multipart && e.boundary.is_none() {
            // A multipart without a boundary cannot be walked: its body is
            // left as it is, like an encoded part.
            e.kind = Kind::Other;
            e.cte = Cte::Encoded;
        }
        self.stack.push(id);
        if kind == Kind::Message && e.cte == Cte::Identity {
            let signed = e.signed;
            self.open(false, signed);
        }
    }

    /// Which open multipart (index into `stack`) the line delimits, if any:
    /// the innermost first, as RFC 2046 5.1.2 asks of nested boundaries.
    fn delimiter_depth(&self, line: &[u8]) -> Option<usize> {
        let rest = line.strip_prefix(b"--")?;
        self.stack.iter().rposition(|&id| {
            let Some(b) = &self.entities[id].boundary else {
                return false;
            };
            rest.strip_prefix(b.as_slice()).is_some_and(|tail| {
                let tail = tail.strip_prefix(b"--").unwrap_or(tail);
                tail.iter().all(|c| *c == b' ' || *c == b'\t')
            })
        })
    }

    fn delimiter(&mut self, depth: usize, line: &[u8]) {
        self.stack.truncate(depth + 1);
        let id = self.stack[depth];
        let boundary_len = self.entities[id].boundary.as_ref().map_or(0, Vec::len);
        let closing = line
            .get(2 + boundary_len..)
            .is_some_and(|t| t.starts_with(b"--"));
        if !closing {
            let signed = self.entities[id].signed;
            self.open(false, signed);
        }
    }
}

struct Parsed {
    mime_version: bool,
    content_type: Option<String>,
    cte: Cte,
}

fn field_name_is(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()..].trim_ascii_start().starts_with(b":")
}

/// The fields that decide conversion, unfolded.
fn parse_header(fields: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(fields);
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    let mut p = Parsed {
        mime_version: false,
        content_type: None,
        cte: Cte::Identity,
    };
    for field in unfolded.split("\r\n") {
        let Some((name, value)) = field.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "mime-version" => p.mime_version = true,
            "content-type" => p.content_type = Some(value.to_string()),
            "content-transfer-encoding" => {
                let v = value.split(['(', ';']).next().unwrap_or("").trim();
                p.cte = match v.to_ascii_lowercase().as_str() {
                    "7bit" | "8bit" | "binary" | "" => Cte::Identity,
                    _ => Cte::Encoded,
                };
            }
            _ => {}
        }
    }
    p
}

/// Kind, whether it is `multipart/signed`, and the boundary.
fn classify(content_type: &str) -> (Kind, bool, Option<Vec<u8>>) {
    let mut parts = content_type.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let (top, sub) = mime.split_once('/').unwrap_or((mime.as_str(), ""));
    let kind = match top {
        "text" => Kind::Text,
        "multipart" => Kind::Multipart,
        "message" if matches!(sub, "rfc822" | "global") => Kind::Message,
        _ => Kind::Other,
    };
    let boundary = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty()).then(|| v.as_bytes().to_vec())
    });
    (kind, kind == Kind::Multipart && sub == "signed", boundary)
}
