//! The zero-copy SIP message scanner: start line, header block and body.
//!
//! Owns the *shape* of a message (RFC 3261 §7): where the start line, every header field and the
//! body are, the headers screenpop reads (first occurrence, with counts), and stream framing
//! (§18.3). It does not interpret header values beyond that; `grammar` parses values, and
//! `identity` decides who is calling.
//!
//! Properties, each tested below and fuzzed: borrows the input (no copies, no allocation), runs in
//! one pass over the bytes (linear time), accepts CRLF and bare LF line ends, LWS line folding,
//! case-insensitive and compact header names, and never panics: every index is bounds-checked.

use super::SipError;

/// Largest message accepted on any transport (the UDP datagram maximum).
pub const MAX_MESSAGE_BYTES: usize = 65_535;
/// Largest header block accepted: bounds the work a TCP peer can make us do before a body.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted in one message.
pub const MAX_HEADER_FIELDS: usize = 256;

/// A scanned SIP message, borrowing the bytes it was scanned from.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The request or status line.
    pub start: StartLine<'a>,
    /// The header block (start line excluded), for iterating every field again.
    head: &'a [u8],
    /// The body, bounded by Content-Length where present.
    pub body: &'a [u8],
    /// The header fields screenpop reads.
    pub headers: Known<'a>,
    /// A defect that still leaves the request answerable (a 400 or 505 can be built from the
    /// headers read before it): bad request line, bad header line, Content-Length problems,
    /// unsupported version. Headers after a bad header line are not read.
    pub defect: Option<SipError>,
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `Method SP Request-URI SP SIP-Version`.
    Request {
        /// The method token, exactly as sent (unknown and escaped methods included).
        method: &'a [u8],
        /// The Request-URI, raw.
        uri: &'a [u8],
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    Response {
        /// The status code, 100–699.
        code: u16,
        /// The reason phrase, possibly empty.
        reason: &'a [u8],
    },
}

/// The header fields screenpop reads: the first value of each class, and how often the class
/// occurred (a header repeated, or a comma list split over several lines, counts each line).
#[derive(Debug, Clone, Default)]
pub struct Known<'a> {
    first: [Option<&'a [u8]>; Name::COUNT],
    count: [u16; Name::COUNT],
}

impl<'a> Known<'a> {
    /// The first value of a header class.
    pub fn get(&self, name: Name) -> Option<&'a [u8]> {
        self.first[name as usize]
    }

    /// How many fields of the class occurred.
    pub fn count(&self, name: Name) -> u16 {
        self.count[name as usize]
    }

    fn record(&mut self, f: Field<'a>) {
        let i = f.name as usize;
        self.count[i] = self.count[i].saturating_add(1);
        if self.first[i].is_none() {
            self.first[i] = Some(f.value);
        }
    }
}

/// Header names screenpop distinguishes; everything else is [`Name::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
#[repr(u8)]
pub enum Name {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    ContentEncoding,
    Contact,
    Pai,
    Rpid,
    Privacy,
    Diversion,
    HistoryInfo,
    Require,
    Reason,
    Accept,
    Other,
}

impl Name {
    /// Number of classes.
    pub const COUNT: usize = Name::Other as usize + 1;

    /// Classifies a header name, case-insensitively, compact forms included (RFC 3261 §7.3.3,
    /// §20: `i m e l c f t v`; `k` Supported and `s` Subject are not read).
    pub fn classify(name: &[u8]) -> Name {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => Name::Via,
                b'f' => Name::From,
                b't' => Name::To,
                b'i' => Name::CallId,
                b'l' => Name::ContentLength,
                b'c' => Name::ContentType,
                b'e' => Name::ContentEncoding,
                b'm' => Name::Contact,
                _ => Name::Other,
            };
        }
        // Dispatch on length and first letter, then one comparison.
        let Some(first) = name.first() else {
            return Name::Other;
        };
        let candidate = match (name.len(), first.to_ascii_lowercase()) {
            (2, b't') => (&b"to"[..], Name::To),
            (3, b'v') => (&b"via"[..], Name::Via),
            (4, b'f') => (&b"from"[..], Name::From),
            (4, b'c') => (&b"cseq"[..], Name::CSeq),
            (6, b'r') => (&b"reason"[..], Name::Reason),
            (6, b'a') => (&b"accept"[..], Name::Accept),
            (7, b'c') if name[1].eq_ignore_ascii_case(&b'a') => (&b"call-id"[..], Name::CallId),
            (7, b'c') => (&b"contact"[..], Name::Contact),
            (7, b'p') => (&b"privacy"[..], Name::Privacy),
            (7, b'r') => (&b"require"[..], Name::Require),
            (9, b'd') => (&b"diversion"[..], Name::Diversion),
            (12, b'm') => (&b"max-forwards"[..], Name::MaxForwards),
            (12, b'c') => (&b"content-type"[..], Name::ContentType),
            (12, b'h') => (&b"history-info"[..], Name::HistoryInfo),
            (14, b'c') => (&b"content-length"[..], Name::ContentLength),
            (15, b'r') => (&b"remote-party-id"[..], Name::Rpid),
            (16, b'c') => (&b"content-encoding"[..], Name::ContentEncoding),
            (19, b'p') => (&b"p-asserted-identity"[..], Name::Pai),
            _ => return Name::Other,
        };
        if candidate.0.eq_ignore_ascii_case(name) {
            candidate.1
        } else {
            Name::Other
        }
    }
}

/// One header field: its name as sent, its class and its value with surrounding LWS trimmed.
/// A folded value keeps its inner line breaks; value parsers treat CR and LF as whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name exactly as sent.
    pub raw_name: &'a [u8],
    /// The classified name.
    pub name: Name,
    /// The value, trimmed.
    pub value: &'a [u8],
}

/// Iterates the header fields of a header block, joining folded continuation lines.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
    /// After the blank line was met: the bytes following it (the body).
    body: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// Iterates a header block (without its start line); stops at a blank line, if any.
    pub fn new(head: &'a [u8]) -> Self {
        Fields {
            rest: head,
            body: None,
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, SipError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.rest;
        if buf.is_empty() {
            return None;
        }
        // The blank line ends the header block (CRLF or bare LF).
        let blank = match buf {
            [b'\n', ..] => Some(1),
            [b'\r', b'\n', ..] => Some(2),
            _ => None,
        };
        if let Some(len) = blank {
            self.body = Some(&buf[len..]);
            self.rest = &[];
            return None;
        }
        // The field ends at the first line end not followed by SP or HT (RFC 3261 §7.3.1).
        let mut end = 0;
        let next_start = loop {
            match memchr::memchr(b'\n', &buf[end..]) {
                Some(i) => {
                    let lf = end + i;
                    match buf.get(lf + 1) {
                        Some(b' ' | b'\t') => end = lf + 1,
                        _ => break lf + 1,
                    }
                }
                None => break buf.len(),
            }
        };
        let line = &buf[..next_start];
        self.rest = &buf[next_start..];
        // field-name = token, then optional whitespace, then ':' [RFC 3261 §7.3.1].
        let name_len = line
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(line.len());
        let raw_name = &line[..name_len];
        let mut colon = name_len;
        while matches!(line.get(colon), Some(b' ' | b'\t')) {
            colon += 1;
        }
        if name_len == 0 || line.get(colon) != Some(&b':') {
            self.rest = &[];
            let why = if line.contains(&b':') {
                "invalid header name"
            } else {
                "header line without a colon"
            };
            return Some(Err(SipError::Malformed(why)));
        }
        Some(Ok(Field {
            raw_name,
            name: Name::classify(raw_name),
            value: trim(&line[colon + 1..]),
        }))
    }
}

/// The outcome of scanning the front of a TCP stream buffer for one message (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// Leading CRLFs before a start line: skip this many bytes. A CRLFCRLF keep-alive ping
    /// (RFC 5626 §3.5.1) is answered with a CRLF pong when `ping` is set.
    Skip {
        /// Bytes to discard.
        len: usize,
        /// True for a double-CRLF ping that wants a single-CRLF pong.
        ping: bool,
    },
    /// A whole message of this many bytes is at the front of the buffer.
    Message(usize),
}

/// Finds the first message in a stream buffer. Errors are fatal for the connection: the stream
/// cannot be re-synchronised after a framing error.
pub fn frame(buf: &[u8]) -> Result<Frame, SipError> {
    let lead = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if lead > 0 {
        // RFC 5626 §3.5.1: "\r\n\r\n" is a ping; any other run of line ends is ignored (§7.5).
        if lead == buf.len() && lead < 4 && buf.starts_with(&b"\r\n\r\n"[..lead]) {
            return Ok(Frame::Incomplete);
        }
        let ping = buf.starts_with(b"\r\n\r\n");
        let len = if ping { 4 } else { lead };
        return Ok(Frame::Skip { len, ping });
    }
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(SipError::TooLarge);
        }
        return Ok(Frame::Incomplete);
    };
    if head_end.body_start > MAX_HEAD_BYTES {
        return Err(SipError::TooLarge);
    }
    let head = &buf[..head_end.head_len];
    let first_lf = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let mut length = None;
    for field in Fields::new(head.get(first_lf + 1..).unwrap_or_default()) {
        let field = field?;
        if field.name == Name::ContentLength {
            if length.is_some() {
                return Err(SipError::Malformed("more than one Content-Length"));
            }
            length = Some(parse_content_length(field.value)?);
        }
    }
    let Some(length) = length else {
        return Err(SipError::Malformed(
            "Content-Length required on a stream transport",
        ));
    };
    let total = head_end.body_start + length;
    if total > MAX_MESSAGE_BYTES {
        return Err(SipError::TooLarge);
    }
    if buf.len() < total {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message(total))
}

/// Where the header block ends.
#[derive(Debug, Clone, Copy)]
struct HeadEnd {
    /// Length of start line + header block, up to and including the last header's line end.
    head_len: usize,
    /// Offset of the first body byte (after the blank line).
    body_start: usize,
}

/// Finds the blank line ending the header block, tolerating bare LF (`\n\n`, `\r\n\n`, `\n\r\n`).
fn find_head_end(buf: &[u8]) -> Option<HeadEnd> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let lf = from + i;
        let after = lf + 1;
        match buf.get(after) {
            Some(b'\n') => {
                return Some(HeadEnd {
                    head_len: after,
                    body_start: after + 1,
                });
            }
            Some(b'\r') if buf.get(after + 1) == Some(&b'\n') => {
                return Some(HeadEnd {
                    head_len: after,
                    body_start: after + 2,
                });
            }
            _ => from = after,
        }
    }
    None
}

/// Parses a Content-Length value: digits only, at most [`MAX_MESSAGE_BYTES`].
pub fn parse_content_length(value: &[u8]) -> Result<usize, SipError> {
    if value.first() == Some(&b'-') {
        return Err(SipError::Malformed("negative Content-Length"));
    }
    parse_decimal(value, MAX_MESSAGE_BYTES as u64)
        .map(|n| n as usize)
        .ok_or(SipError::Malformed("invalid Content-Length"))
}

/// Parses ASCII digits into a number no larger than `max`; `None` on anything else.
pub fn parse_decimal(value: &[u8], max: u64) -> Option<u64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= max).then_some(n)
}

/// What a message came over, which says how its body length is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One message per datagram (UDP): Content-Length, if present, bounds the body.
    Datagram,
    /// A message framed by [`frame`] on a TCP connection: Content-Length is present and exact.
    Stream,
    /// A message framed by [`frame`] on a TLS connection (RFC 3261 §26; Via transport `TLS`):
    /// taken exactly as [`Transport::Stream`].
    Tls,
}

impl Transport {
    /// The `transport` label of the SIP metrics: `udp`, `tcp`, `tls`.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Datagram => "udp",
            Transport::Stream => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Scans one whole message (a datagram, or a frame cut by [`frame`]).
pub fn scan(buf: &[u8], transport: Transport) -> Result<Message<'_>, SipError> {
    if buf.len() > MAX_MESSAGE_BYTES {
        return Err(SipError::TooLarge);
    }
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let lead = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let buf = &buf[lead..];
    let line_end = memchr::memchr(b'\n', buf).ok_or(SipError::Malformed("no line end"))?;
    let (start, mut defect) = parse_start_line(strip_cr(&buf[..line_end]))?;
    let rest = &buf[line_end + 1..];
    // One pass over the header block: the field iterator stops at the blank line and says where
    // the body starts; a datagram that ends without a blank line still delimits its headers.
    let mut known = Known::default();
    let mut fields = Fields::new(rest);
    let mut n = 0usize;
    while let Some(field) = fields.next() {
        n += 1;
        if n > MAX_HEADER_FIELDS || rest.len() - fields.rest.len() > MAX_HEAD_BYTES {
            return Err(SipError::TooLarge);
        }
        match field {
            Ok(field) => known.record(field),
            Err(e) => {
                defect.get_or_insert(e);
                break;
            }
        }
    }
    let head = &rest[..rest.len() - fields.rest.len()];
    let after_head = fields.body;
    let tail = after_head.unwrap_or_default();
    let declared = match known.get(Name::ContentLength).map(parse_content_length) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            defect.get_or_insert(e);
            None
        }
        None => None,
    };
    if known.count(Name::ContentLength) > 1 {
        defect.get_or_insert(SipError::Malformed("more than one Content-Length"));
    }
    let body = match (transport, declared) {
        (_, Some(n)) if n > tail.len() => {
            defect.get_or_insert(SipError::Malformed("body shorter than Content-Length"));
            tail
        }
        (_, Some(n)) => &tail[..n],
        (Transport::Datagram, None) => tail,
        (Transport::Stream | Transport::Tls, None) => {
            defect.get_or_insert(SipError::Malformed(
                "Content-Length required on a stream transport",
            ));
            tail
        }
    };
    if let (StartLine::Response { .. }, Some(e)) = (start, defect) {
        // Responses are never answered: a defective one is simply not taken.
        return Err(match e {
            SipError::Malformed(why) => SipError::BadResponse(why),
            other => other,
        });
    }
    Ok(Message {
        start,
        head,
        body,
        headers: known,
        defect,
    })
}

impl<'a> Message<'a> {
    /// Iterates every header field again, in order (already validated by [`scan`]).
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        Fields::new(self.head).filter_map(Result::ok)
    }

    /// Every value of one header class, in order.
    pub fn all(&self, name: Name) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |f| f.name == name)
            .map(|f| f.value)
    }

    /// The request method, if this is a request.
    pub fn method(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
}

/// Parses a request or status line (RFC 3261 §7.1, §7.2), strictly: single SPs between elements.
/// A defective *request* line is returned with its defect so that a 400 (or 505) can still be
/// sent; a defective status line is an error, since responses are never answered.
fn parse_start_line(line: &[u8]) -> Result<(StartLine<'_>, Option<SipError>), SipError> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = line.splitn(3, |&b| b == b' ');
        let version = parts.next().unwrap_or_default();
        if !version.eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(SipError::BadResponse("unsupported SIP version"));
        }
        let code = parts.next().unwrap_or_default();
        let code = (code.len() == 3)
            .then(|| parse_decimal(code, 699))
            .flatten()
            .filter(|&c| c >= 100)
            .ok_or(SipError::BadResponse("invalid status code"))?;
        let reason = parts.next().unwrap_or_default();
        return Ok((
            StartLine::Response {
                code: code as u16,
                reason,
            },
            None,
        ));
    }
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let defective = |why| {
        Ok((
            StartLine::Request { method, uri: b"" },
            Some(SipError::Malformed(why)),
        ))
    };
    let (Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next()) else {
        return defective("request line is not Method SP URI SP Version");
    };
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return defective("invalid method");
    }
    if uri.is_empty() || uri.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return defective("invalid Request-URI");
    }
    if uri[0] == b'<' {
        return defective("Request-URI enclosed in <>");
    }
    if !is_version(version) {
        return defective("invalid SIP version");
    }
    let start = StartLine::Request { method, uri };
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok((start, Some(SipError::VersionNotSupported)));
    }
    Ok((start, None))
}

/// `"SIP" "/" 1*DIGIT "." 1*DIGIT` (RFC 3261 §25.1).
fn is_version(v: &[u8]) -> bool {
    let Some(rest) = v.get(4..).filter(|_| v[..4].eq_ignore_ascii_case(b"SIP/")) else {
        return false;
    };
    let mut halves = rest.splitn(2, |&b| b == b'.');
    let major = halves.next().unwrap_or_default();
    let minor = halves.next().unwrap_or_default();
    !major.is_empty()
        && !minor.is_empty()
        && major.iter().all(u8::is_ascii_digit)
        && minor.iter().all(u8::is_ascii_digit)
}

/// RFC 3261 §25.1 `token` characters.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// SP, HT, CR or LF: whitespace inside a (possibly folded) header value.
pub fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims whitespace, line ends included, from both ends.
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:1001@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:1001@example.com>\r\n\
From: \"Acme\" <sip:+14155550100@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn scans_a_plain_invite() {
        let m = scan(INVITE, Transport::Datagram).expect("valid");
        assert_eq!(
            m.start,
            StartLine::Request {
                method: b"INVITE",
                uri: b"sip:1001@192.0.2.10"
            }
        );
        assert_eq!(
            m.headers.get(Name::CallId),
            Some(&b"a84b4c76e66710@pc33.example.com"[..])
        );
        assert_eq!(m.headers.get(Name::CSeq), Some(&b"314159 INVITE"[..]));
        assert_eq!(m.body, b"v=0\n");
        assert_eq!(m.fields().count(), 8);
    }

    #[test]
    fn compact_names_bare_lf_and_folding() {
        let msg = b"OPTIONS sip:x@h SIP/2.0\nv: SIP/2.0/UDP h;branch=z9hG4bK1\ni: abc\nf: <sip:a@h>\n ;tag=1\nt: sip:b@h\nCSeq: 1 OPTIONS\nl: 0\n\n";
        let m = scan(msg, Transport::Datagram).expect("valid");
        assert_eq!(m.headers.get(Name::CallId), Some(&b"abc"[..]));
        assert_eq!(m.headers.get(Name::From), Some(&b"<sip:a@h>\n ;tag=1"[..]));
        assert_eq!(m.headers.get(Name::To), Some(&b"sip:b@h"[..]));
        assert!(m.body.is_empty());
    }

    #[test]
    fn content_length_rules() {
        let base = "OPTIONS sip:x@h SIP/2.0\r\nCall-ID: a\r\n";
        let with = |cl: &str, body: &str| format!("{base}{cl}\r\n{body}");
        let defect = |m: &str, t| scan(m.as_bytes(), t).expect("answerable").defect;
        let long = with("Content-Length: 10\r\n", "abc");
        assert_eq!(
            defect(&long, Transport::Datagram),
            Some(SipError::Malformed("body shorter than Content-Length"))
        );
        let short = with("Content-Length: 1\r\n", "abc");
        assert_eq!(
            scan(short.as_bytes(), Transport::Datagram)
                .expect("ok")
                .body,
            b"a"
        );
        let neg = with("Content-Length: -1\r\n", "");
        assert_eq!(
            defect(&neg, Transport::Datagram),
            Some(SipError::Malformed("negative Content-Length"))
        );
        let twice = with("Content-Length: 0\r\nl: 0\r\n", "");
        assert!(defect(&twice, Transport::Datagram).is_some());
        let absent = with("", "xyz");
        assert_eq!(
            scan(absent.as_bytes(), Transport::Datagram)
                .expect("ok")
                .body,
            b"xyz"
        );
        assert!(defect(&absent, Transport::Stream).is_some());
        assert!(
            defect(&absent, Transport::Tls).is_some(),
            "TLS frames as TCP"
        );
        let response = "SIP/2.0 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert!(matches!(
            scan(response.as_bytes(), Transport::Datagram),
            Err(SipError::BadResponse(_))
        ));
    }

    #[test]
    fn start_line_errors() {
        let bytes = |l: &str| -> &'static [u8] {
            Box::leak(
                format!("{l}\r\nCall-ID: x\r\n\r\n")
                    .into_bytes()
                    .into_boxed_slice(),
            )
        };
        let bad = |l: &str| scan(bytes(l), Transport::Datagram);
        let defect = |l: &str| bad(l).expect("answerable").defect;
        assert_eq!(
            defect("INVITE sip:a@b SIP/7.0"),
            Some(SipError::VersionNotSupported)
        );
        assert!(matches!(
            defect("INVITE  sip:a@b SIP/2.0"),
            Some(SipError::Malformed(_))
        ));
        assert!(matches!(
            defect("INVITE sip:a@b SIP/2.0 "),
            Some(SipError::Malformed(_))
        ));
        assert!(matches!(
            defect("INVITE <sip:a@b> SIP/2.0"),
            Some(SipError::Malformed(_))
        ));
        assert!(matches!(
            bad("SIP/2.0 2000 OK").unwrap_err(),
            SipError::BadResponse(_)
        ));
        assert_eq!(
            defect("!interesting-Method0123456789_*+`.%indeed'~ sip:a@b SIP/2.0"),
            None
        );
        let ok = bad("SIP/2.0 180 ").expect("empty reason phrase is valid");
        assert_eq!(
            ok.start,
            StartLine::Response {
                code: 180,
                reason: b""
            }
        );
        assert!(bad("SIP/2.0 100").is_ok());
    }

    #[test]
    fn unterminated_header_block_keeps_every_header() {
        let m = scan(
            b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 OPTIONS",
            Transport::Datagram,
        )
        .expect("a datagram delimits its header block");
        assert_eq!(m.headers.get(Name::CSeq), Some(&b"1 OPTIONS"[..]));
    }

    #[test]
    fn stream_framing() {
        let one = b"OPTIONS sip:x@h SIP/2.0\r\nl: 3\r\n\r\nabcOPTIONS";
        assert_eq!(frame(one), Ok(Frame::Message(one.len() - 7)));
        assert_eq!(
            frame(b"OPTIONS sip:x@h SIP/2.0\r\nl: 3\r\n\r\nab"),
            Ok(Frame::Incomplete)
        );
        assert_eq!(
            frame(b"OPTIONS sip:x@h SIP/2.0\r\nl: 3\r"),
            Ok(Frame::Incomplete)
        );
        assert_eq!(
            frame(b"\r\n\r\nOPT"),
            Ok(Frame::Skip { len: 4, ping: true })
        );
        assert_eq!(frame(b"\r\n"), Ok(Frame::Incomplete));
        assert_eq!(
            frame(b"\r\nOPT"),
            Ok(Frame::Skip {
                len: 2,
                ping: false
            })
        );
        assert!(frame(b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: a\r\n\r\n").is_err());
        let huge = vec![b'a'; MAX_HEAD_BYTES + 10];
        assert_eq!(frame(&huge), Err(SipError::TooLarge));
    }

    #[test]
    fn header_line_errors() {
        let r = scan(
            b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: a\r\nno colon here\r\nCSeq: 1 OPTIONS\r\n\r\n",
            Transport::Datagram,
        )
        .expect("answerable");
        assert_eq!(
            r.defect,
            Some(SipError::Malformed("header line without a colon"))
        );
        assert_eq!(
            (r.headers.get(Name::CallId), r.headers.get(Name::CSeq)),
            (Some(&b"a"[..]), None)
        );
        let r = scan(
            b"OPTIONS sip:x@h SIP/2.0\r\nBad Name: x\r\n\r\n",
            Transport::Datagram,
        )
        .expect("answerable");
        assert_eq!(r.defect, Some(SipError::Malformed("invalid header name")));
    }

    #[test]
    fn name_classification() {
        assert_eq!(Name::classify(b"MaX-fOrWaRdS"), Name::MaxForwards);
        assert_eq!(Name::classify(b"p-asserted-identity"), Name::Pai);
        assert_eq!(Name::classify(b"L"), Name::ContentLength);
        assert_eq!(Name::classify(b"k"), Name::Other);
        assert_eq!(Name::classify(b"X-Anything"), Name::Other);
        assert_eq!(Name::classify(b""), Name::Other);
        for (name, class) in [
            ("Via", Name::Via),
            ("TO", Name::To),
            ("call-ID", Name::CallId),
            ("Contact", Name::Contact),
            ("Require", Name::Require),
            ("Reason", Name::Reason),
            ("Accept", Name::Accept),
            ("Privacy", Name::Privacy),
            ("Diversion", Name::Diversion),
            ("Content-Type", Name::ContentType),
            ("History-Info", Name::HistoryInfo),
            ("Remote-Party-ID", Name::Rpid),
            ("Content-Encoding", Name::ContentEncoding),
            ("CSeq", Name::CSeq),
            ("From", Name::From),
        ] {
            assert_eq!(Name::classify(name.as_bytes()), class, "{name}");
        }
    }
}
