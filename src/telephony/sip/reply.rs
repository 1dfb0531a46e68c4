//! Building responses (RFC 3261 §8.2.6): copy Via, From, To, Call-ID and CSeq, add a To tag to
//! anything above 100, and stamp the top Via with where the request really came from.
//!
//! The response goes back to the request's source address and port, from the socket it arrived
//! on (RFC 3581 §4, symmetric response routing): that is what survives NAT, and a PBX forking to
//! us always listens where it sends from. On the top Via we fill `rport` when the client asked
//! for it and add `received` when sent-by is not the source address (RFC 3261 §18.2.1).

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::grammar::{Via, params, split_list};
use super::scan::{Message, Name, is_ws};

/// Identifies screenpop in responses.
pub const SERVER: &str = concat!("screenpop/", env!("CARGO_PKG_VERSION"));

/// A response to build.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'r> {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'r str,
    /// The To tag to add when the request's To has none (ignored for 100).
    pub to_tag: Option<&'r str>,
    /// Extra header fields.
    pub extra: &'r [(&'r str, &'r str)],
}

/// Builds the response bytes for `req`, received from `source`.
pub fn build(req: &Message<'_>, source: SocketAddr, reply: Reply<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let _ = write!(Fmt(&mut out), "SIP/2.0 {} ", reply.code);
    push_line_safe(&mut out, reply.reason.as_bytes());
    out.extend_from_slice(b"\r\n");

    let mut first = true;
    for value in req.all(Name::Via) {
        for via in split_list(value) {
            out.extend_from_slice(b"Via: ");
            if first {
                first = false;
                match Via::parse(via) {
                    Ok(parsed) => stamp_via(&mut out, &parsed, source),
                    Err(_) => push_clean(&mut out, via),
                }
            } else {
                push_clean(&mut out, via);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(from) = req.headers.get(Name::From) {
        out.extend_from_slice(b"From: ");
        push_clean(&mut out, from);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(to) = req.headers.get(Name::To) {
        out.extend_from_slice(b"To: ");
        push_clean(&mut out, to);
        if let Some(tag) = reply.to_tag.filter(|_| reply.code > 100)
            && !has_tag(to)
        {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in [
        ("Call-ID", req.headers.get(Name::CallId)),
        ("CSeq", req.headers.get(Name::CSeq)),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            push_clean(&mut out, value);
            out.extend_from_slice(b"\r\n");
        }
    }
    for (name, value) in reply.extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        push_line_safe(&mut out, value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Server: ");
    out.extend_from_slice(SERVER.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    out
}

/// Turns a provisional response built by [`build`] into a final one for the same request:
/// new status line, and the To tag added. This is how a held INVITE is finished without keeping
/// the INVITE itself: the provisional already holds every header a response copies.
pub fn finalize(provisional: &[u8], code: u16, reason: &str, to_tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(provisional.len() + 48);
    let _ = write!(Fmt(&mut out), "SIP/2.0 {code} ");
    push_line_safe(&mut out, reason.as_bytes());
    let rest =
        memchr::memmem::find(provisional, b"\r\n").map_or(&b"\r\n"[..], |i| &provisional[i..]);
    // Our own output: every line ends CRLF and To is written exactly as "\r\nTo: ".
    match memchr::memmem::find(rest, b"\r\nTo: ") {
        Some(to_start) => {
            let line_end = memchr::memmem::find(&rest[to_start + 2..], b"\r\n")
                .map_or(rest.len(), |e| to_start + 2 + e);
            out.extend_from_slice(&rest[..line_end]);
            if !has_tag(&rest[to_start + 6..line_end]) {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(to_tag.as_bytes());
            }
            out.extend_from_slice(&rest[line_end..]);
        }
        None => out.extend_from_slice(rest),
    }
    out
}

/// Whether a To/From value already carries a `tag` header parameter.
fn has_tag(value: &[u8]) -> bool {
    super::grammar::NameAddr::parse(value).is_ok_and(|na| na.param("tag").is_some())
}

/// Writes the top via-parm with `received` and a filled `rport`.
fn stamp_via(out: &mut Vec<u8>, via: &Via<'_>, source: SocketAddr) {
    out.extend_from_slice(b"SIP/2.0/");
    push_clean(out, via.transport);
    out.push(b' ');
    push_clean(out, via.host);
    if let Some(port) = via.port {
        let _ = write!(Fmt(out), ":{port}");
    }
    let source_ip = source.ip().to_string();
    let host = via
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(via.host);
    let mut rport = false;
    for (name, value) in params(via.params) {
        if name.eq_ignore_ascii_case(b"received") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"rport") {
            rport = true;
            let _ = write!(Fmt(out), ";rport={}", source.port());
            continue;
        }
        out.push(b';');
        push_clean(out, name);
        if !value.is_empty() {
            out.push(b'=');
            push_clean(out, value);
        }
    }
    // RFC 3581 §4: with rport, received is always added.
    if rport || !host.eq_ignore_ascii_case(source_ip.as_bytes()) {
        let _ = write!(Fmt(out), ";received={source_ip}");
    }
}

/// Copies request text into a response with every run of whitespace (folding included) and of
/// control characters (a stray CR, NUL…) collapsed to one SP, so nothing copied can break our
/// CRLF framing or smuggle a header line to the peer. Every byte copied from a request goes
/// through here.
fn push_clean(out: &mut Vec<u8>, value: &[u8]) {
    let mut in_ws = false;
    for &b in value {
        if is_ws(b) || b < 0x20 || b == 0x7f {
            in_ws = true;
            continue;
        }
        if in_ws {
            out.push(b' ');
            in_ws = false;
        }
        out.push(b);
    }
}

/// Copies text, replacing any CR or LF so it cannot break the framing.
fn push_line_safe(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(
        value
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// `fmt::Write` onto a byte vector.
struct Fmt<'v>(&'v mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telephony::sip::scan::{Transport, scan};

    #[test]
    fn copies_vias_and_stamps_the_top_one() {
        let req = b"INVITE sip:2001@h SIP/2.0\r\nVia: SIP/2.0/UDP pbx.example.com:5060;rport;branch=z9hG4bKa,\r\n SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKb\r\nv: SIP/2.0/TCP 10.0.0.8;branch=z9hG4bKc\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:2001@h>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\r\n";
        let msg = scan(req, Transport::Datagram).expect("ok");
        let src: SocketAddr = "192.0.2.9:40000".parse().expect("addr");
        let out = build(
            &msg,
            src,
            Reply {
                code: 487,
                reason: "Request Terminated",
                to_tag: Some("t1"),
                extra: &[],
            },
        );
        let text = String::from_utf8(out).expect("utf8");
        let expected = "SIP/2.0 487 Request Terminated\r\n\
Via: SIP/2.0/UDP pbx.example.com:5060;rport=40000;branch=z9hG4bKa;received=192.0.2.9\r\n\
Via: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKb\r\n\
Via: SIP/2.0/TCP 10.0.0.8;branch=z9hG4bKc\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:2001@h>;tag=t1\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n";
        assert!(text.starts_with(expected), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    /// Found by `cargo fuzz` (fuzz/regressions/sip_scan-reply-bare-cr.bin): a bare CR inside a
    /// Via parameter value was copied into the response.
    #[test]
    fn nothing_copied_can_break_the_framing() {
        let inputs: [&[u8]; 3] = [
            b"TI.no\r\nVia: SIP/2.0/T h;bra=w3\r\0\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=a\rTo: <sip:x@evil>\r\nCall-ID: c\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=a\n b;x=\x01\nFrom: <sip:a@b>;tag=\r1\nCall-ID: c\n\n",
        ];
        for input in inputs {
            let msg = scan(input, Transport::Datagram).expect("answerable");
            let out = build(
                &msg,
                "127.0.0.1:5060".parse().expect("addr"),
                Reply {
                    code: 400,
                    reason: "x",
                    to_tag: Some("t"),
                    extra: &[],
                },
            );
            for (i, &b) in out.iter().enumerate() {
                let crlf = (b == b'\r' && out.get(i + 1) == Some(&b'\n'))
                    || (b == b'\n' && i > 0 && out[i - 1] == b'\r');
                assert!(
                    crlf || !(b < 0x20 || b == 0x7f),
                    "control byte {b:#04x} at {i} in {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn finalize_matches_a_direct_build() {
        let req = b"INVITE sip:2001@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:2001@h>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\r\n";
        let msg = scan(req, Transport::Datagram).expect("ok");
        let src: SocketAddr = "10.0.0.1:5060".parse().expect("addr");
        let trying = build(
            &msg,
            src,
            Reply {
                code: 100,
                reason: "Trying",
                to_tag: None,
                extra: &[],
            },
        );
        let direct = build(
            &msg,
            src,
            Reply {
                code: 487,
                reason: "Request Terminated",
                to_tag: Some("x1"),
                extra: &[],
            },
        );
        assert_eq!(
            String::from_utf8(finalize(&trying, 487, "Request Terminated", "x1")),
            String::from_utf8(direct)
        );
    }

    #[test]
    fn no_received_when_sent_by_is_the_source_and_no_tag_on_100() {
        let req = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let msg = scan(req, Transport::Datagram).expect("ok");
        let src: SocketAddr = "[2001:db8::1]:5060".parse().expect("addr");
        let text = String::from_utf8(build(
            &msg,
            src,
            Reply {
                code: 100,
                reason: "Trying",
                to_tag: Some("x"),
                extra: &[],
            },
        ))
        .expect("utf8");
        assert!(
            text.contains("Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa\r\n"),
            "{text}"
        );
        assert!(text.contains("To: <sip:h>\r\n"), "{text}");
    }
}
