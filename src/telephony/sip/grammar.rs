//! Header-value grammar: comma lists, name-addr / addr-spec, parameters, URIs, Via and CSeq.
//!
//! Everything borrows from the message; the only allocations are percent-decoding and
//! display-name unescaping, and only when the input actually holds an escape. Values may be
//! folded: CR and LF count as whitespace everywhere (RFC 3261 §7.3.1, `LWS`).

use std::borrow::Cow;

use super::SipError;
use super::scan::{is_token, is_ws, parse_decimal, trim};

/// Splits a header value on commas outside quoted strings and angle brackets (RFC 3261 §7.3.1).
pub fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        loop {
            let s = rest?;
            let cut = list_cut(s);
            let (item, next) = match cut {
                Some(i) => (&s[..i], Some(&s[i + 1..])),
                None => (s, None),
            };
            rest = next;
            let item = trim(item);
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// The first ',' outside quotes and angle brackets, jumping between the bytes that matter.
fn list_cut(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(j) = memchr::memchr3(b',', b'"', b'<', &s[i..]) {
        let at = i + j;
        match s[at] {
            b',' => return Some(at),
            b'<' => i = at + 1 + memchr::memchr(b'>', &s[at + 1..])?,
            _ => {
                // A quoted string: skip to its closing quote, honouring backslash escapes.
                let mut k = at + 1;
                loop {
                    let q = k + memchr::memchr2(b'"', b'\\', &s[k..])?;
                    if s[q] == b'\\' {
                        k = q + 2;
                        if k > s.len() {
                            return None;
                        }
                    } else {
                        i = q;
                        break;
                    }
                }
            }
        }
        i += 1;
    }
    None
}

/// A display name as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display<'a> {
    /// `"..."` contents, escapes still in place.
    Quoted(&'a [u8]),
    /// `*(token LWS)`, trimmed.
    Tokens(&'a [u8]),
}

impl Display<'_> {
    /// The display name as text: `\"` and `\\` unescaped, folding collapsed to one space,
    /// invalid UTF-8 replaced. An empty name is `None`.
    pub fn text(&self) -> Option<String> {
        let raw = match *self {
            Display::Quoted(s) | Display::Tokens(s) => s,
        };
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        let quoted = matches!(self, Display::Quoted(_));
        while i < raw.len() {
            let b = raw[i];
            if quoted && b == b'\\' && i + 1 < raw.len() {
                out.push(raw[i + 1]);
                i += 2;
                continue;
            }
            if b == b'\r' || b == b'\n' {
                // Folding: CRLF plus following whitespace is one SP.
                while i < raw.len() && is_ws(raw[i]) {
                    i += 1;
                }
                if out.last() != Some(&b' ') {
                    out.push(b' ');
                }
                continue;
            }
            out.push(b);
            i += 1;
        }
        let text = String::from_utf8_lossy(&out).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }
}

/// `name-addr` or `addr-spec` followed by header parameters (RFC 3261 §20.10, §25.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name, if any.
    pub display: Option<Display<'a>>,
    /// The URI, without angle brackets.
    pub uri: &'a [u8],
    /// Header parameters: raw text from the first `;` (empty if none).
    pub params: &'a [u8],
}

impl<'a> NameAddr<'a> {
    /// Parses one list entry.
    pub fn parse(entry: &'a [u8]) -> Result<Self, SipError> {
        let entry = trim(entry);
        let mut i = 0;
        let mut display = None;
        // A quoted display name.
        if entry.first() == Some(&b'"') {
            let close = find_quote_end(entry, 1)
                .ok_or(SipError::Malformed("unterminated quoted string"))?;
            display = Some(Display::Quoted(&entry[1..close]));
            i = close + 1;
            while i < entry.len() && is_ws(entry[i]) {
                i += 1;
            }
            if entry.get(i) != Some(&b'<') {
                return Err(SipError::Malformed("display name not followed by <URI>"));
            }
        } else if let Some(lt) = memchr::memchr(b'<', entry) {
            let tokens = trim(&entry[..lt]);
            if !tokens.iter().all(|&b| is_token(b) || is_ws(b)) {
                return Err(SipError::Malformed("invalid characters in display name"));
            }
            if !tokens.is_empty() {
                display = Some(Display::Tokens(tokens));
            }
            i = lt;
        }
        if entry.get(i) == Some(&b'<') {
            let gt = memchr::memchr(b'>', &entry[i..])
                .map(|g| i + g)
                .ok_or(SipError::Malformed("missing '>' after URI"))?;
            let uri = &entry[i + 1..gt];
            if uri.is_empty() || uri.iter().any(|&b| is_ws(b)) {
                return Err(SipError::Malformed("whitespace inside <URI>"));
            }
            let params = trim(&entry[gt + 1..]);
            if !params.is_empty() && params[0] != b';' {
                return Err(SipError::Malformed("text after <URI>"));
            }
            check_params(params)?;
            return Ok(NameAddr {
                display,
                uri,
                params,
            });
        }
        // addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10), and the URI
        // itself may contain neither ',', '?' nor ';' (§20, last paragraph).
        let end = entry
            .iter()
            .position(|&b| b == b';' || is_ws(b))
            .unwrap_or(entry.len());
        let uri = &entry[..end];
        if uri.is_empty() || uri.contains(&b'?') || uri.contains(&b'"') {
            return Err(SipError::Malformed("invalid addr-spec"));
        }
        let params = trim(&entry[end..]);
        if !params.is_empty() && params[0] != b';' {
            return Err(SipError::Malformed("whitespace inside addr-spec"));
        }
        check_params(params)?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// A header parameter's value (`None` if absent, `Some(b"")` if present without a value).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        param(self.params, name)
    }
}

/// Index of the closing quote of a quoted string whose contents start at `from`.
fn find_quote_end(s: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Iterates `;name[=value]` parameters, trimmed; quoted values keep their quotes.
pub fn params(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let raw = trim(raw);
    let raw = raw.strip_prefix(b";").unwrap_or(raw);
    let mut rest = Some(raw);
    std::iter::from_fn(move || {
        let s = rest?;
        // Split on ';' outside quotes.
        let mut quoted = false;
        let mut cut = None;
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b';' if !quoted => {
                    cut = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let (item, next) = match cut {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        rest = next;
        let (name, value) = match memchr::memchr(b'=', item) {
            Some(eq) => (trim(&item[..eq]), trim(&item[eq + 1..])),
            None => (trim(item), &b""[..]),
        };
        Some((name, value))
    })
}

/// The value of parameter `name` (case-insensitive) in raw `;`-parameters.
pub fn param<'a>(raw: &'a [u8], name: &str) -> Option<&'a [u8]> {
    params(raw)
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v)
}

/// Rejects empty parameter names (`;;`) and names that are not tokens.
fn check_params(raw: &[u8]) -> Result<(), SipError> {
    if trim(raw).is_empty() {
        return Ok(());
    }
    for (name, _) in params(raw) {
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(SipError::Malformed("invalid header parameter"));
        }
    }
    Ok(())
}

/// URI schemes screenpop reads (RFC 3261 §19.1, RFC 3966).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:`
    Tel,
    /// Anything else: the rest of the URI is opaque.
    Other,
}

/// A URI, split but not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// sip/sips: the user (before any `:password`), with user parameters (`;npdi;rn=…`)
    /// still attached; tel: the subscriber number with its parameters. Escapes kept.
    pub user: Option<&'a [u8]>,
    /// sip/sips: host, IPv6 brackets kept; tel: empty.
    pub host: &'a [u8],
    /// sip/sips: port if present.
    pub port: Option<u16>,
    /// URI parameters after the host (sip) from the first `;`, raw.
    pub params: &'a [u8],
    /// `?headers` part without the `?` (sip), if present.
    pub headers: Option<&'a [u8]>,
}

impl<'a> Uri<'a> {
    /// Parses a URI. Unknown schemes are accepted as opaque.
    pub fn parse(raw: &'a [u8]) -> Result<Self, SipError> {
        let colon = memchr::memchr(b':', raw).ok_or(SipError::Malformed("URI without a scheme"))?;
        let scheme_raw = &raw[..colon];
        let valid_scheme = scheme_raw.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme_raw
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !valid_scheme {
            return Err(SipError::Malformed("invalid URI scheme"));
        }
        let rest = &raw[colon + 1..];
        let scheme = if scheme_raw.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            return Ok(Uri {
                scheme: Scheme::Other,
                user: None,
                host: rest,
                port: None,
                params: b"",
                headers: None,
            });
        };
        if scheme == Scheme::Tel {
            if rest.is_empty() {
                return Err(SipError::Malformed("empty tel URI"));
            }
            return Ok(Uri {
                scheme,
                user: Some(rest),
                host: b"",
                port: None,
                params: b"",
                headers: None,
            });
        }
        // userinfo ends at the last '@': an unescaped '@' cannot occur in user or password, nor in
        // `?headers` (hvalue allows no '@'). `?` and `;` may occur inside the user part
        // (user-unreserved, RFC 3261 §25.1), so headers and parameters are looked for after it.
        let (user, hostpart) = match memchr::memrchr(b'@', rest) {
            Some(at) => {
                let userinfo = &rest[..at];
                // The password is after the first ':'.
                let user_end = userinfo
                    .iter()
                    .position(|&b| b == b':')
                    .unwrap_or(userinfo.len());
                (Some(&userinfo[..user_end]), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (hostpart, headers) = match memchr::memchr(b'?', hostpart) {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        if user.is_some_and(<[u8]>::is_empty) {
            return Err(SipError::Malformed("empty user in URI"));
        }
        let (hostport, params) = match memchr::memchr(b';', hostpart) {
            Some(s) => (&hostpart[..s], &hostpart[s..]),
            None => (hostpart, &b""[..]),
        };
        let (host, port) = split_hostport(hostport)?;
        Ok(Uri {
            scheme,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// The user (or tel number) without user parameters, percent-decoded; `None` if absent.
    pub fn user_number(&self) -> Option<Cow<'a, str>> {
        let user = self.user?;
        let bare = match memchr::memchr(b';', user) {
            Some(s) => &user[..s],
            None => user,
        };
        Some(percent_decode(bare))
    }

    /// A URI parameter (sip: after the host; tel: after the number).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        match self.scheme {
            Scheme::Tel => {
                let user = self.user?;
                let s = memchr::memchr(b';', user)?;
                param(&user[s..], name)
            }
            _ => param(self.params, name),
        }
    }
}

/// Splits `host[:port]`, with bracketed IPv6 references (RFC 5118 §4).
pub fn split_hostport(hostport: &[u8]) -> Result<(&[u8], Option<u16>), SipError> {
    let (host, port) = if hostport.first() == Some(&b'[') {
        let close = memchr::memchr(b']', hostport)
            .ok_or(SipError::Malformed("unterminated IPv6 reference"))?;
        let inner = &hostport[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(SipError::Malformed("invalid IPv6 reference"));
        }
        let after = &hostport[close + 1..];
        match after {
            [] => (&hostport[..=close], None),
            [b':', port @ ..] => (&hostport[..=close], Some(port)),
            _ => return Err(SipError::Malformed("text after IPv6 reference")),
        }
    } else {
        match memchr::memchr(b':', hostport) {
            Some(c) => (&hostport[..c], Some(&hostport[c + 1..])),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(SipError::Malformed("empty host"));
    }
    if host[0] != b'['
        && !host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(SipError::Malformed("invalid host"));
    }
    let port = match port {
        Some(p) => {
            Some(parse_decimal(p, 65_535).ok_or(SipError::Malformed("invalid port"))? as u16)
        }
        None => None,
    };
    Ok((host, port))
}

/// Decodes `%XX` escapes (RFC 3261 §19.1.2: a user part may be escaped); malformed escapes are
/// kept as they are, invalid UTF-8 becomes U+FFFD. Borrows when there is nothing to change.
pub fn percent_decode(s: &[u8]) -> Cow<'_, str> {
    percent_encoding::percent_decode(s).decode_utf8_lossy()
}

/// One via-parm (RFC 3261 §20.42): `SIP / 2.0 / transport sent-by *(;param)`, LWS allowed
/// around the slashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// The transport token (`UDP`, `TCP`, `TLS`, `WS`…), as sent.
    pub transport: &'a [u8],
    /// Host of sent-by, IPv6 brackets kept.
    pub host: &'a [u8],
    /// Port of sent-by.
    pub port: Option<u16>,
    /// Raw parameters from the first `;`.
    pub params: &'a [u8],
}

impl<'a> Via<'a> {
    /// Parses one via-parm.
    pub fn parse(raw: &'a [u8]) -> Result<Self, SipError> {
        let mut parts = raw.splitn(3, |&b| b == b'/');
        let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SipError::Malformed("invalid Via sent-protocol"));
        };
        if !trim(name).eq_ignore_ascii_case(b"SIP") || trim(version) != b"2.0" {
            return Err(SipError::Malformed("invalid Via sent-protocol"));
        }
        let rest = trim(rest);
        let t_end = rest
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(rest.len());
        let transport = &rest[..t_end];
        if transport.is_empty() {
            return Err(SipError::Malformed("invalid Via transport"));
        }
        let rest = trim(&rest[t_end..]);
        let (sent_by, params) = match memchr::memchr(b';', rest) {
            Some(s) => (trim(&rest[..s]), &rest[s..]),
            None => (rest, &b""[..]),
        };
        // sent-by allows LWS around the colon: "host : port".
        let sent_by_compact: &[u8] = sent_by;
        let (host, port) = if sent_by_compact.iter().any(|&b| is_ws(b))
            && sent_by_compact.first() != Some(&b'[')
        {
            let colon = memchr::memchr(b':', sent_by_compact)
                .ok_or(SipError::Malformed("invalid Via sent-by"))?;
            let host = trim(&sent_by_compact[..colon]);
            let port = parse_decimal(trim(&sent_by_compact[colon + 1..]), 65_535)
                .ok_or(SipError::Malformed("invalid Via port"))? as u16;
            split_hostport(host)?;
            (host, Some(port))
        } else {
            split_hostport(sent_by_compact)?
        };
        check_params(params)?;
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a [u8]> {
        param(self.params, "branch").filter(|b| !b.is_empty())
    }
}

/// `CSeq: number method` (RFC 3261 §20.16): number below 2**31.
pub fn parse_cseq(value: &[u8]) -> Result<(u32, &[u8]), SipError> {
    let value = trim(value);
    let split = value
        .iter()
        .position(|&b| is_ws(b))
        .ok_or(SipError::Malformed("invalid CSeq"))?;
    let number = parse_decimal(&value[..split], (1 << 31) - 1)
        .ok_or(SipError::Malformed("invalid CSeq number"))?;
    let method = trim(&value[split..]);
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return Err(SipError::Malformed("invalid CSeq method"));
    }
    Ok((number as u32, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        let v = br#""Doe, John" <sip:a@h;x=1,2>, <tel:+1555>,,  sip:b@h"#;
        let items: Vec<_> = split_list(v).collect();
        assert_eq!(
            items,
            vec![
                &br#""Doe, John" <sip:a@h;x=1,2>"#[..],
                b"<tel:+1555>",
                b"sip:b@h"
            ]
        );
        let esc = br#""a\",b" <sip:x@y>, <sip:z@w>"#;
        assert_eq!(split_list(esc).count(), 2);
    }

    #[test]
    fn name_addr_forms() {
        let na = NameAddr::parse(
            br#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ; tag = 98asjd8"#,
        )
        .expect("ok");
        assert_eq!(
            na.display.and_then(|d| d.text()).as_deref(),
            Some(r#"J Rosenberg \""#)
        );
        assert_eq!(na.uri, b"sip:jdrosen@example.com");
        assert_eq!(na.param("tag"), Some(&b"98asjd8"[..]));

        let spec = NameAddr::parse(b"sip:u@h;tag=x").expect("ok");
        assert_eq!(spec.uri, b"sip:u@h");
        assert_eq!(spec.param("tag"), Some(&b"x"[..]));

        let tokens = NameAddr::parse(b"Acme  Corp <sip:1@h>").expect("ok");
        assert_eq!(
            tokens.display.and_then(|d| d.text()).as_deref(),
            Some("Acme  Corp")
        );

        assert!(NameAddr::parse(b"Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse(br#""Watson, Thomas" < sip:t.watson@example.org >"#).is_err());
        assert!(NameAddr::parse(br#""unterminated <sip:a@b>"#).is_err());
        assert!(NameAddr::parse(b"sip:caller@example.net;;tag=134161461246").is_err());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
    }

    #[test]
    fn folded_display_collapses_to_one_space() {
        let na = NameAddr::parse(b"\"Zo\xc3\xab\r\n  Nunez\" <sip:a@b>").expect("ok");
        assert_eq!(
            na.display.and_then(|d| d.text()).as_deref(),
            Some("Zoë Nunez")
        );
    }

    #[test]
    fn uris() {
        let u = Uri::parse(b"sip:+14155550100;npdi;rn=+14155559999@[2001:db8::10]:5070;user=phone")
            .expect("ok");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user_number().as_deref(), Some("+14155550100"));
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("user"), Some(&b"phone"[..]));

        let t = Uri::parse(b"tel:+1-415-555-0100;ext=12").expect("ok");
        assert_eq!(t.scheme, Scheme::Tel);
        assert_eq!(t.user_number().as_deref(), Some("+1-415-555-0100"));
        assert_eq!(t.param("ext"), Some(&b"12"[..]));

        let e = Uri::parse(b"sip:%2B1415%35550100:secret@h").expect("ok");
        assert_eq!(e.user_number().as_deref(), Some("+14155550100"));
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%41"), "%zzA");

        let weird = Uri::parse(b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com")
            .expect("user-unreserved characters in the user part");
        assert_eq!((weird.host, weird.headers), (&b"example.com"[..], None));
        assert_eq!(
            weird.user,
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        let with_headers =
            Uri::parse(b"sip:user@example.com?Route=%3Csip:example.com%3E").expect("ok");
        assert_eq!(
            with_headers.headers,
            Some(&b"Route=%3Csip:example.com%3E"[..])
        );
        let o = Uri::parse(b"soap.beep://192.0.2.103:3002").expect("opaque");
        assert_eq!(o.scheme, Scheme::Other);
        assert!(Uri::parse(b"sip:[2001:db8::10").is_err());
        assert!(Uri::parse(b"sip:@h").is_err());
        assert!(Uri::parse(b"sip:a@h:99999").is_err());
    }

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").expect("ok");
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        let v6 = Via::parse(b"SIP/2.0/TCP [2001:db8::9:1]:5061;rport;branch=z9hG4bK1").expect("ok");
        assert_eq!((v6.host, v6.port), (&b"[2001:db8::9:1]"[..], Some(5061)));
        assert_eq!(param(v6.params, "rport"), Some(&b""[..]));
        let spaced =
            Via::parse(b"SIP/2.0/UDP host.example.com : 5060 ;branch=z9hG4bKx").expect("ok");
        assert_eq!(spaced.port, Some(5060));
        assert!(Via::parse(b"SIP/3.0/UDP h").is_err());
    }

    #[test]
    fn cseq() {
        assert_eq!(parse_cseq(b"0009\r\n  INVITE"), Ok((9, &b"INVITE"[..])));
        assert!(parse_cseq(b"36893488147419103232 INVITE").is_err());
        assert!(parse_cseq(b"1").is_err());
    }
}
