//! Which status a request deserves before screenpop acts on it.
//!
//! The order of checks decides the answer when a request has several defects; it follows RFC 3261
//! §8.2 (method, then URI scheme, then extensions, then content) after the syntax checks of §8.1.1
//! that make a request answerable at all. RFC 4475 fixes the expectations for edge cases: an
//! unknown method with a mismatched CSeq gets 501 (§3.1.2.16), a known one 400 (§3.1.2.15).
//!
//! Two judgements, in two functions:
//! - [`well_formed`]: whether the request is one any SIP element would act on (syntax, the
//!   mandatory fields once each, a known scheme and method). The SIP endpoint and the HEP
//!   observer share it: what the endpoint would answer 400 rang no phone, so HEP pops nothing
//!   of it either.
//! - [`request`]: that, plus what a UAS supports (§8.2.2.3 `Require`, §8.2.3 body type and
//!   `Accept`). An INVITE passes these whatever it carries: a fork target that never answers
//!   honours `Require: 100rel` or `precondition` trivially (it sends no reliable provisional and
//!   no alerting), never reads the body, and never sends one, so the phone beside it decides
//!   whether the call works. What was tolerated is reported in [`Checked::tolerated`] (counted
//!   in `screenpop_sip_invites_tolerated_total{class}`). Other requests (OPTIONS) still get
//!   420/415 as RFC 3261 and RFC 4475 expect.

use super::SipError;
use super::grammar::{NameAddr, Scheme, Uri, Via, parse_cseq, split_list};
use super::scan::{Message, Name, StartLine, parse_decimal, trim};

/// The methods screenpop answers, in the `Allow` header.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, OPTIONS, BYE";
/// The bodies screenpop accepts (it never reads them).
pub const ACCEPT: &str = "application/sdp, multipart/mixed";

/// Known SIP methods screenpop does not serve: answered 405 with `Allow` (RFC 3261 §8.2.1).
const NOT_SERVED: &[&str] = &[
    "REGISTER",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "INFO",
    "UPDATE",
    "PRACK",
    "REFER",
    "PUBLISH",
];

/// `Require` option tags tolerated although screenpop never answers a call: session timers
/// (RFC 4028) only apply to a session that a 2xx would establish, and we never send one.
const TOLERATED_REQUIRE: &[&str] = &["timer"];

/// The method of a request, as screenpop treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// A call arriving: 100 Trying, then hold.
    Invite,
    /// Acknowledges our final response.
    Ack,
    /// The caller (or the PBX) gives up on the branch.
    Cancel,
    /// Keepalive from the PBX.
    Options,
    /// Ends a dialog (never established by us).
    Bye,
    /// A known method we do not serve.
    NotServed,
    /// Anything else.
    Unknown,
}

impl Method {
    /// Classifies a method token (methods are case-sensitive, RFC 3261 §7.1).
    pub fn of(raw: &[u8]) -> Method {
        match raw {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"BYE" => Method::Bye,
            m if NOT_SERVED.iter().any(|n| n.as_bytes() == m) => Method::NotServed,
            _ => Method::Unknown,
        }
    }

    /// A metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Bye => "BYE",
            Method::NotServed => "not_served",
            Method::Unknown => "unknown",
        }
    }
}

/// A request that passed every check, with the fields the endpoint needs.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: &'a [u8],
    /// Call-ID value.
    pub call_id: &'a [u8],
    /// CSeq number.
    pub cseq: u32,
    /// The From tag (absent in RFC 2543 requests).
    pub from_tag: Option<&'a [u8]>,
    /// The To tag: present on in-dialog requests.
    pub to_tag: Option<&'a [u8]>,
    /// The top via-parm.
    pub via: Via<'a>,
    /// What a full UAS would have refused in this INVITE and screenpop tolerated.
    pub tolerated: Tolerated,
}

/// The classes of INVITE a full UAS would refuse and a fork target takes (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tolerated {
    /// `Require` named option tags screenpop does not implement (`100rel`, `precondition`…):
    /// 420 for any other request.
    pub require: bool,
    /// The body is not SDP or multipart/mixed, or is content-encoded: 415 otherwise.
    pub body: bool,
    /// `Accept` leaves out SDP: 406 otherwise.
    pub accept: bool,
}

impl Tolerated {
    /// The metrics labels of the classes present.
    pub fn classes(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.require, "require"),
            (self.body, "body_type"),
            (self.accept, "accept"),
        ]
        .into_iter()
        .filter_map(|(on, label)| on.then_some(label))
    }
}

/// A request screenpop refuses, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status code.
    pub code: u16,
    /// The reason phrase; for 400 it names the defect.
    pub reason: String,
    /// One extra header for the response (`Allow`, `Accept`, `Unsupported`).
    pub header: Option<(&'static str, String)>,
    /// A metrics label for the defect.
    pub kind: &'static str,
}

impl Rejection {
    fn bad(defect: &str) -> Rejection {
        Rejection {
            code: 400,
            reason: format!("Bad Request ({defect})"),
            header: None,
            kind: "malformed",
        }
    }
}

/// Checks a scanned request: [`well_formed`], then what a UAS supports (see the module docs).
/// `Err` carries the response to send; the caller decides whether a response can be sent at
/// all (not for ACK, not without a Via).
pub fn request<'a>(msg: &Message<'a>) -> Result<Checked<'a>, Rejection> {
    let mut checked = well_formed(msg)?;
    let rejection = supported(msg, checked.method);
    if checked.method == Method::Invite {
        checked.tolerated = Tolerated {
            require: rejection.iter().any(|r| r.code == 420),
            body: rejection.iter().any(|r| r.code == 415),
            accept: rejection.iter().any(|r| r.code == 406),
        };
        return Ok(checked);
    }
    match rejection.into_iter().next() {
        Some(rejection) => Err(rejection),
        None => Ok(checked),
    }
}

/// Whether a request is one any SIP element would act on: the syntax checks of RFC 3261 §8.1.1,
/// a scheme and a method screenpop knows (§8.2.1, §8.2.2.1). Shared by the SIP endpoint and the
/// HEP observer.
pub fn well_formed<'a>(msg: &Message<'a>) -> Result<Checked<'a>, Rejection> {
    let StartLine::Request {
        method: raw_method,
        uri,
    } = msg.start
    else {
        return Err(Rejection::bad("not a request"));
    };
    match msg.defect {
        Some(SipError::VersionNotSupported) => {
            return Err(Rejection {
                code: 505,
                reason: "Version Not Supported".into(),
                header: None,
                kind: "version",
            });
        }
        Some(SipError::TooLarge) => {
            return Err(Rejection {
                code: 513,
                reason: "Message Too Large".into(),
                header: None,
                kind: "too_large",
            });
        }
        Some(SipError::Malformed(why) | SipError::BadResponse(why)) => {
            return Err(Rejection::bad(why));
        }
        None => {}
    }
    let h = &msg.headers;
    // §8.1.1: the mandatory fields, each once.
    let via_raw = h
        .get(Name::Via)
        .ok_or_else(|| Rejection::bad("missing Via"))?;
    let from = h
        .get(Name::From)
        .ok_or_else(|| Rejection::bad("missing From"))?;
    let to = h
        .get(Name::To)
        .ok_or_else(|| Rejection::bad("missing To"))?;
    let call_id = h
        .get(Name::CallId)
        .ok_or_else(|| Rejection::bad("missing Call-ID"))?;
    let cseq_raw = h
        .get(Name::CSeq)
        .ok_or_else(|| Rejection::bad("missing CSeq"))?;
    for (count, name) in [
        (h.count(Name::From), "From"),
        (h.count(Name::To), "To"),
        (h.count(Name::CallId), "Call-ID"),
        (h.count(Name::CSeq), "CSeq"),
        (h.count(Name::MaxForwards), "Max-Forwards"),
        (h.count(Name::ContentType), "Content-Type"),
    ] {
        if count > 1 {
            return Err(Rejection::bad(&format!("more than one {name}")));
        }
    }
    let via = split_list(via_raw)
        .next()
        .ok_or_else(|| Rejection::bad("empty Via"))?;
    let via = Via::parse(via).map_err(|e| Rejection::bad(&format!("Via: {e}")))?;
    let from = NameAddr::parse(from).map_err(|e| Rejection::bad(&format!("From: {e}")))?;
    let to = NameAddr::parse(to).map_err(|e| Rejection::bad(&format!("To: {e}")))?;
    for na in [&from, &to] {
        Uri::parse(na.uri).map_err(|e| Rejection::bad(&format!("From/To URI: {e}")))?;
    }
    if call_id.is_empty() || call_id.iter().any(|&b| b <= b' ') {
        return Err(Rejection::bad("invalid Call-ID"));
    }
    let (cseq, cseq_method) =
        parse_cseq(cseq_raw).map_err(|e| Rejection::bad(&format!("CSeq: {e}")))?;
    if let Some(mf) = h.get(Name::MaxForwards)
        && parse_decimal(mf, 255).is_none()
    {
        return Err(Rejection::bad("invalid Max-Forwards"));
    }
    if let Some(contact) = h.get(Name::Contact)
        && trim(contact) != b"*"
    {
        for entry in split_list(contact) {
            NameAddr::parse(entry).map_err(|e| Rejection::bad(&format!("Contact: {e}")))?;
        }
    }
    let parsed_uri = Uri::parse(uri).map_err(|e| Rejection::bad(&format!("Request-URI: {e}")))?;
    if matches!(parsed_uri.scheme, Scheme::Sip | Scheme::Sips) && parsed_uri.headers.is_some() {
        return Err(Rejection::bad("headers in Request-URI"));
    }

    let method = Method::of(raw_method);
    // §8.2.2.1: a scheme we do not understand.
    if parsed_uri.scheme == Scheme::Other {
        return Err(Rejection {
            code: 416,
            reason: "Unsupported URI Scheme".into(),
            header: None,
            kind: "uri_scheme",
        });
    }
    // §8.2.1: methods.
    match method {
        Method::Unknown => {
            return Err(Rejection {
                code: 501,
                reason: "Not Implemented".into(),
                header: Some(("Allow", ALLOW.into())),
                kind: "method",
            });
        }
        Method::NotServed => {
            return Err(Rejection {
                code: 405,
                reason: "Method Not Allowed".into(),
                header: Some(("Allow", ALLOW.into())),
                kind: "method",
            });
        }
        _ => {}
    }
    if cseq_method != raw_method {
        return Err(Rejection::bad(
            "CSeq method does not match the request method",
        ));
    }
    Ok(Checked {
        method,
        uri,
        call_id,
        cseq,
        from_tag: from.param("tag").filter(|t| !t.is_empty()),
        to_tag: to.param("tag").filter(|t| !t.is_empty()),
        via,
        tolerated: Tolerated::default(),
    })
}

/// What a UAS that implements no extension and reads only SDP refuses, in the order RFC 3261
/// §8.2 checks it: `Require` (420), the body (415), `Accept` (406). Every applicable refusal, so
/// that an INVITE's tolerated classes are all known.
fn supported(msg: &Message<'_>, method: Method) -> Vec<Rejection> {
    let h = &msg.headers;
    let mut refusals = Vec::new();
    // §8.2.2.3: Require is not applied to CANCEL and ACK.
    if !matches!(method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<String> = msg
            .all(Name::Require)
            .flat_map(split_list)
            .map(trim)
            .filter(|tag| {
                !TOLERATED_REQUIRE
                    .iter()
                    .any(|t| tag.eq_ignore_ascii_case(t.as_bytes()))
            })
            .map(|tag| String::from_utf8_lossy(tag).into_owned())
            .collect();
        if !unsupported.is_empty() {
            refusals.push(Rejection {
                code: 420,
                reason: "Bad Extension".into(),
                header: Some(("Unsupported", unsupported.join(", "))),
                kind: "extension",
            });
        }
    }
    // §8.2.3: a body we would not understand. We never read bodies, but a UAS must refuse one
    // whose type it does not accept.
    if !msg.body.is_empty() && method != Method::Ack {
        let ctype = h
            .get(Name::ContentType)
            .map(|t| trim(t.split(|&b| b == b';').next().unwrap_or_default()));
        let encoding_ok = h
            .get(Name::ContentEncoding)
            .is_none_or(|e| trim(e).is_empty() || trim(e).eq_ignore_ascii_case(b"identity"));
        let type_ok = ctype.is_some_and(|t| {
            t.eq_ignore_ascii_case(b"application/sdp") || t.eq_ignore_ascii_case(b"multipart/mixed")
        });
        if !(type_ok && encoding_ok) {
            refusals.push(Rejection {
                code: 415,
                reason: "Unsupported Media Type".into(),
                header: Some(("Accept", ACCEPT.into())),
                kind: "media_type",
            });
        }
    }
    // §8.2.3 / RFC 4475 §3.3.16: an INVITE that will not accept SDP cannot be answered in any
    // format we could ever use.
    if method == Method::Invite
        && let Some(accept) = h.get(Name::Accept)
        && !trim(accept).is_empty()
        && !split_list(accept).any(|media| {
            let media = trim(media.split(|&b| b == b';').next().unwrap_or_default());
            [&b"application/sdp"[..], b"application/*", b"*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
        })
    {
        refusals.push(Rejection {
            code: 406,
            reason: "Not Acceptable".into(),
            header: Some(("Accept", ACCEPT.into())),
            kind: "not_acceptable",
        });
    }
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telephony::sip::scan::{Transport, scan};

    fn check(method: &str, cseq_method: &str, extra: &str) -> Result<Checked<'static>, Rejection> {
        let text = format!(
            "{method} sip:2001@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:2001@h>\r\nCall-ID: c1\r\nCSeq: 1 {cseq_method}\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        let leaked: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        request(&scan(leaked, Transport::Datagram).expect("scans"))
    }

    #[test]
    fn statuses() {
        assert!(check("INVITE", "INVITE", "").is_ok());
        assert_eq!(check("REGISTER", "REGISTER", "").unwrap_err().code, 405);
        assert_eq!(check("FOO", "INVITE", "").unwrap_err().code, 501);
        assert_eq!(check("OPTIONS", "INVITE", "").unwrap_err().code, 400);
        let r = check("OPTIONS", "OPTIONS", "Require: nothingSupported\r\n").unwrap_err();
        assert_eq!(
            (r.code, r.header),
            (420, Some(("Unsupported", "nothingSupported".into())))
        );
        assert!(check("INVITE", "INVITE", "Require: timer\r\n").is_ok());
        assert!(check("CANCEL", "CANCEL", "Require: foo\r\n").is_ok());
        assert_eq!(
            check("INVITE", "INVITE", "Max-Forwards: 300\r\n")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            check("INVITE", "INVITE", "Call-ID: c2\r\n")
                .unwrap_err()
                .reason,
            "Bad Request (more than one Call-ID)"
        );
    }

    #[test]
    fn missing_field_is_named() {
        let msg = b"INVITE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCSeq: 1 INVITE\r\n\r\n";
        let r = request(&scan(msg, Transport::Datagram).expect("scans")).unwrap_err();
        assert_eq!(
            (r.code, r.reason.as_str()),
            (400, "Bad Request (missing Call-ID)")
        );
    }

    #[test]
    fn unknown_scheme_and_body_type() {
        let msg = b"OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(
            request(&scan(msg, Transport::Datagram).expect("scans"))
                .unwrap_err()
                .code,
            416
        );
        let msg = b"OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Type: application/unknownformat\r\nContent-Length: 3\r\n\r\nabc";
        let r = request(&scan(msg, Transport::Datagram).expect("scans")).unwrap_err();
        assert_eq!((r.code, r.header.map(|h| h.0)), (415, Some("Accept")));
    }

    #[test]
    fn an_invite_is_taken_whatever_it_requires_carries_or_accepts() {
        let plain = check("INVITE", "INVITE", "").expect("ok");
        assert_eq!(plain.tolerated, Tolerated::default());
        let c = check("INVITE", "INVITE", "Require: 100rel, precondition\r\n").expect("ok");
        assert_eq!(c.tolerated.classes().collect::<Vec<_>>(), ["require"]);
        let c = check("INVITE", "INVITE", "Require: timer\r\n").expect("ok");
        assert_eq!(c.tolerated, Tolerated::default(), "timer is supported");
        let c = check(
            "INVITE",
            "INVITE",
            "Accept: multipart/mixed, application/ISUP\r\n",
        )
        .expect("ok");
        assert_eq!(c.tolerated.classes().collect::<Vec<_>>(), ["accept"]);
        let msg = b"INVITE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nRequire: 100rel\r\nAccept: application/ISUP\r\nContent-Type: application/vnd.example+xml\r\nContent-Length: 3\r\n\r\nabc";
        let c = request(&scan(msg, Transport::Datagram).expect("scans")).expect("ok");
        assert_eq!(
            c.tolerated.classes().collect::<Vec<_>>(),
            ["require", "body_type", "accept"]
        );
        // Malformed stays malformed: tolerance is about capabilities, not syntax.
        assert_eq!(
            check("INVITE", "INVITE", "Require: 100rel\r\nCall-ID: c2\r\n")
                .unwrap_err()
                .code,
            400
        );
        // What is not an INVITE keeps the RFC's answers.
        assert_eq!(
            check("OPTIONS", "OPTIONS", "Require: 100rel\r\n")
                .unwrap_err()
                .code,
            420
        );
    }
}
