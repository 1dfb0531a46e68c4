//! HTTP Digest authentication as SIP uses it [RFC 3261 §22.4, RFC 2617 §3.2, RFC 8760]: reading
//! a `WWW-Authenticate` (401) or `Proxy-Authenticate` (407) challenge and answering it with an
//! `Authorization` or `Proxy-Authorization` value.
//!
//! Algorithms: `MD5` (the default when a challenge names none), `MD5-sess`, `SHA-256` and
//! `SHA-256-sess` [RFC 8760 §2.1]. Quality of protection: `auth` when offered, else `auth-int`
//! (the SUBSCRIBEs we send have no body, so its body hash is that of the empty string), else the
//! RFC 2069 form without `qop`. Of several challenges, the topmost one we support is answered
//! [RFC 8760 §2.4]. Owns no transport: the subscriber calls it for each challenge.

use md5::Digest as _;

use crate::telephony::sip::scan::{is_token, trim};

/// Why a challenge could not be answered. The PBX is at fault (or speaks a scheme we lack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `Digest` challenge with an algorithm we support.
    #[error("no Digest challenge with a supported algorithm (MD5, SHA-256)")]
    Unsupported,
    /// A Digest challenge without `realm` or `nonce`, or with broken syntax.
    #[error("malformed Digest challenge: {0}")]
    Malformed(&'static str),
}

/// The hash behind a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5` [RFC 2617].
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256` [RFC 8760].
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Algorithm> {
        [
            ("MD5", Algorithm::Md5),
            ("MD5-sess", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, a)| a)
    }

    /// The token sent back in `algorithm=`.
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn hash(&self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex::encode(md5::Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(data.as_bytes()))
            }
        }
    }

    fn session(&self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

/// The protection asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// No `qop` in the challenge: RFC 2069 compatibility.
    None,
    /// `qop=auth`.
    Auth,
    /// `qop=auth-int` (only when `auth` is not offered).
    AuthInt,
}

/// A Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back.
    pub opaque: Option<String>,
    /// `algorithm`.
    pub algorithm: Algorithm,
    /// The `qop` we will answer with.
    pub qop: Qop,
    /// `stale=true`: the credentials were right, only the nonce was old [RFC 2617 §3.2.1].
    pub stale: bool,
}

impl Challenge {
    /// The first supported Digest challenge among header values (one challenge per value, or
    /// several comma-separated; RFC 7235 allows both).
    pub fn pick<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Challenge, DigestError> {
        let mut malformed = None;
        for value in values {
            for challenge in split_challenges(value) {
                match Challenge::parse(challenge) {
                    Ok(c) => return Ok(c),
                    Err(DigestError::Malformed(why)) => malformed = Some(why),
                    Err(DigestError::Unsupported) => {}
                }
            }
        }
        Err(malformed.map_or(DigestError::Unsupported, DigestError::Malformed))
    }

    /// Parses one challenge: `Digest realm="…", nonce="…", …`.
    pub fn parse(value: &[u8]) -> Result<Challenge, DigestError> {
        let value = trim(value);
        let scheme_len = value.iter().take_while(|&&b| is_token(b)).count();
        if !value[..scheme_len].eq_ignore_ascii_case(b"Digest") {
            return Err(DigestError::Unsupported);
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = Algorithm::Md5;
        let mut qop = Qop::None;
        let mut stale = false;
        for param in auth_params(&value[scheme_len..]) {
            let (name, v) = param?;
            match name.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "algorithm" => algorithm = Algorithm::parse(&v).ok_or(DigestError::Unsupported)?,
                "qop" => {
                    let offered: Vec<&str> = v.split(',').map(str::trim).collect();
                    qop = if offered.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
                        Qop::Auth
                    } else if offered.iter().any(|q| q.eq_ignore_ascii_case("auth-int")) {
                        Qop::AuthInt
                    } else {
                        // Only qops we do not know: answer as RFC 2069, which may be refused.
                        Qop::None
                    };
                }
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        Ok(Challenge {
            realm: realm.ok_or(DigestError::Malformed("no realm"))?,
            nonce: nonce
                .filter(|n| !n.is_empty())
                .ok_or(DigestError::Malformed("no nonce"))?,
            opaque,
            algorithm,
            qop,
            stale,
        })
    }

    /// The credentials value for `method uri`: `nc` counts the requests made with this nonce
    /// (from 1), `cnonce` is a fresh client nonce.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let a = self.algorithm;
        let mut ha1 = a.hash(&format!("{username}:{}:{password}", self.realm));
        if a.session() {
            ha1 = a.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = match self.qop {
            Qop::AuthInt => a.hash(&format!("{method}:{uri}:{}", a.hash(""))),
            Qop::Auth | Qop::None => a.hash(&format!("{method}:{uri}")),
        };
        let nc = format!("{nc:08x}");
        let response = match self.qop {
            Qop::None => a.hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
            Qop::Auth | Qop::AuthInt => {
                let q = if self.qop == Qop::Auth {
                    "auth"
                } else {
                    "auth-int"
                };
                a.hash(&format!("{ha1}:{}:{nc}:{cnonce}:{q}:{ha2}", self.nonce))
            }
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            a.name(),
        );
        match self.qop {
            Qop::None => {}
            Qop::Auth => out.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{}\"",
                quote(cnonce)
            )),
            Qop::AuthInt => out.push_str(&format!(
                ", qop=auth-int, nc={nc}, cnonce=\"{}\"",
                quote(cnonce)
            )),
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        out
    }
}

/// Escapes a quoted-string's content; line breaks are dropped (they would end the header).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Splits a header value holding several challenges (`Digest a=1, b=2, Digest c=3`) at each
/// scheme token that starts a new challenge: a bare token followed by whitespace, outside quotes.
fn split_challenges(value: &[u8]) -> Vec<&[u8]> {
    let mut starts = vec![0];
    let mut quoted = false;
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                let rest = &value[i + 1..];
                let lead = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
                let token = rest[lead..].iter().take_while(|&&b| is_token(b)).count();
                if token > 0 && rest.get(lead + token).is_some_and(|b| *b == b' ') {
                    starts.push(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(value.len(), |e| e - 1);
        if let Some(part) = value.get(s..end) {
            out.push(trim(part));
        }
    }
    out
}

/// Iterates `name=value` auth-params separated by commas; quoted values are unescaped.
fn auth_params(mut s: &[u8]) -> impl Iterator<Item = Result<(String, String), DigestError>> + '_ {
    std::iter::from_fn(move || {
        loop {
            s = trim(s);
            match s.first() {
                None => return None,
                Some(b',') => s = &s[1..],
                Some(_) => break,
            }
        }
        let name_len = s.iter().take_while(|&&b| is_token(b)).count();
        if name_len == 0 {
            s = &[];
            return Some(Err(DigestError::Malformed("bad parameter name")));
        }
        let name = String::from_utf8_lossy(&s[..name_len]).into_owned();
        s = trim(&s[name_len..]);
        if s.first() != Some(&b'=') {
            s = &[];
            return Some(Err(DigestError::Malformed("parameter without a value")));
        }
        s = trim(&s[1..]);
        let value = if s.first() == Some(&b'"') {
            let mut out = Vec::new();
            let mut i = 1;
            loop {
                match s.get(i) {
                    None => {
                        s = &[];
                        return Some(Err(DigestError::Malformed("unterminated quoted string")));
                    }
                    Some(b'\\') => {
                        if let Some(&c) = s.get(i + 1) {
                            out.push(c);
                        }
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(&c) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            s = &s[(i + 1).min(s.len())..];
            out
        } else {
            let len = s.iter().position(|&b| b == b',').unwrap_or(s.len());
            let v = trim(&s[..len]).to_vec();
            s = &s[len..];
            v
        };
        Some(Ok((name, String::from_utf8_lossy(&value).into_owned())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5, with the RFC 7616 §3.9.1 erratum-free vectors for SHA-256.
    #[test]
    fn rfc_vectors() {
        let c = Challenge::parse(
            br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("valid");
        assert_eq!((c.algorithm, c.qop), (Algorithm::Md5, Qop::Auth));
        let v = c.answer(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            v.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{v}"
        );
        assert!(
            v.contains("qop=auth, nc=00000001, cnonce=\"0a4f113b\""),
            "{v}"
        );
        assert!(
            v.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#),
            "{v}"
        );

        let header = |alg: &str| {
            format!(
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
            )
        };
        let answer = |alg: &str| {
            Challenge::parse(header(alg).as_bytes())
                .expect("valid")
                .answer(
                    "Mufasa",
                    "Circle of Life",
                    "GET",
                    "/dir/index.html",
                    1,
                    "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                )
        };
        assert!(
            answer("SHA-256").contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{}",
            answer("SHA-256")
        );
        assert!(
            answer("MD5").contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#),
            "{}",
            answer("MD5")
        );
    }

    #[test]
    fn without_qop_is_rfc_2069() {
        let c = Challenge::parse(b"Digest realm=\"r\", nonce=\"n\"").expect("valid");
        assert_eq!(c.qop, Qop::None);
        let v = c.answer("u", "p", "SUBSCRIBE", "sip:2001@pbx", 1, "c");
        // MD5(MD5(u:r:p):n:MD5(SUBSCRIBE:sip:2001@pbx))
        let ha1 = Algorithm::Md5.hash("u:r:p");
        let ha2 = Algorithm::Md5.hash("SUBSCRIBE:sip:2001@pbx");
        let want = Algorithm::Md5.hash(&format!("{ha1}:n:{ha2}"));
        assert!(v.contains(&format!("response=\"{want}\"")), "{v}");
        assert!(!v.contains("qop") && !v.contains("cnonce"), "{v}");
    }

    #[test]
    fn picks_the_first_supported_challenge() {
        let values: [&[u8]; 2] = [
            b"Basic realm=\"x\"",
            b"Digest realm=\"a\", nonce=\"1\", algorithm=SHA-512-256, Digest realm=\"b\", nonce=\"2\", algorithm=SHA-256, stale=TRUE",
        ];
        let c = Challenge::pick(values).expect("one supported");
        assert_eq!(
            (c.realm.as_str(), c.algorithm, c.stale),
            ("b", Algorithm::Sha256, true)
        );
        assert_eq!(
            Challenge::pick([&b"Basic realm=\"x\""[..]]),
            Err(DigestError::Unsupported)
        );
        assert_eq!(
            Challenge::pick([&b"Digest realm=\"x\""[..]]),
            Err(DigestError::Malformed("no nonce"))
        );
    }

    #[test]
    fn quoting_and_garbage() {
        let c = Challenge::parse(br#"digest realm="a \"q\" realm", nonce="n,1", qop=auth"#)
            .expect("valid");
        assert_eq!(c.realm, "a \"q\" realm");
        assert_eq!(c.nonce, "n,1");
        let v = c.answer("us\"er\r\n", "p", "SUBSCRIBE", "sip:x@y", 2, "c");
        assert!(v.contains(r#"username="us\"er""#), "{v}");
        assert!(v.contains(r#"realm="a \"q\" realm""#), "{v}");
        assert!(v.contains("nc=00000002"), "{v}");
        for bad in [
            &b"Digest realm=\"unterminated"[..],
            b"Digest =x",
            b"Digest realm",
            b"Digest",
            b"",
            b"\xff\xfe",
        ] {
            assert!(Challenge::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sess_and_auth_int() {
        let c = Challenge::parse(
            b"Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\", algorithm=MD5-sess",
        )
        .expect("valid");
        assert_eq!((c.algorithm, c.qop), (Algorithm::Md5Sess, Qop::AuthInt));
        let v = c.answer("u", "p", "SUBSCRIBE", "sip:a@b", 1, "cn");
        let ha1 = Algorithm::Md5.hash(&format!("{}:n:cn", Algorithm::Md5.hash("u:r:p")));
        let ha2 = Algorithm::Md5.hash(&format!("SUBSCRIBE:sip:a@b:{}", Algorithm::Md5.hash("")));
        let want = Algorithm::Md5.hash(&format!("{ha1}:n:00000001:cn:auth-int:{ha2}"));
        assert!(v.contains(&format!("response=\"{want}\"")), "{v}");
        assert!(
            v.contains("algorithm=MD5-sess") && v.contains("qop=auth-int"),
            "{v}"
        );
    }
}
