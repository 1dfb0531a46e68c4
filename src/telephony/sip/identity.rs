//! Who is calling, and which extension is ringing: the identity rules applied to an INVITE.
//!
//! Caller precedence (PROTOCOLS.md §1, a screenpop choice): the first entry of
//! `P-Asserted-Identity` (RFC 3325 §9.1, sip/sips or tel), then a `Remote-Party-ID` with
//! `party=calling` (draft-ietf-sip-privacy-04; no `party` counts as calling), then `From`.
//! PAI and RPID are trusted because only allow-listed peers reach the listener: the allow-list
//! *is* the trust domain.
//!
//! Withheld when `Privacy` holds `id`, `header` or `user` (RFC 3323 §4.2, RFC 3325 §9.3), when
//! the chosen RPID says `privacy=full|uri`, or when the chosen URI is an anonymous form
//! (`anonymous`, `restricted`, `unavailable` users, the `anonymous.invalid` host; RFC 3323
//! §4.1.1.3). A withheld caller still carries the number if one was asserted: the pop says
//! "withheld" and does not look it up.

use super::grammar::{NameAddr, Scheme, Uri, param, split_list};
use super::scan::{Message, Name, trim};
use crate::calls::{Caller, IdentitySource as Source};

/// Users that mean "no identity" (RFC 3323 §4.1.1.3 and common gateway practice).
const ANONYMOUS_USERS: &[&str] = &[
    "anonymous",
    "restricted",
    "unavailable",
    "unknown",
    "private",
];

/// Extracts the caller of a request. Entries that fail to parse are skipped, falling through to
/// the next source; a missing or unparsable `From` yields an identity with no number.
pub fn caller(msg: &Message<'_>) -> Caller {
    let privacy_withheld = msg.all(Name::Privacy).any(|v| {
        v.split(|&b| b == b';' || b == b',').map(trim).any(|p| {
            [&b"id"[..], b"header", b"user"]
                .iter()
                .any(|w| p.eq_ignore_ascii_case(w))
        })
    });

    let pai = msg
        .all(Name::Pai)
        .flat_map(split_list)
        .find_map(|e| NameAddr::parse(e).ok());
    let (chosen, source, rpid_privacy) = if let Some(na) = pai {
        (Some(na), Source::Pai, false)
    } else if let Some(na) = msg
        .all(Name::Rpid)
        .flat_map(split_list)
        .filter_map(|e| NameAddr::parse(e).ok())
        .find(|na| {
            na.param("party")
                .is_none_or(|p| p.eq_ignore_ascii_case(b"calling"))
        })
    {
        let private = na
            .param("privacy")
            .is_some_and(|p| p.eq_ignore_ascii_case(b"full") || p.eq_ignore_ascii_case(b"uri"));
        (Some(na), Source::Rpid, private)
    } else {
        (
            msg.headers
                .get(Name::From)
                .and_then(|f| NameAddr::parse(f).ok()),
            Source::From,
            false,
        )
    };

    let Some(na) = chosen else {
        return Caller {
            number: None,
            display: None,
            source,
            withheld: privacy_withheld,
        };
    };
    let uri = Uri::parse(na.uri).ok();
    let anonymous = uri.is_some_and(|u| is_anonymous(&u));
    let number = uri
        .filter(|u| matches!(u.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel))
        .and_then(|u| u.user_number())
        .map(|n| n.into_owned())
        .filter(|n| !ANONYMOUS_USERS.iter().any(|a| n.eq_ignore_ascii_case(a)));
    let display = na.display.and_then(|d| d.text());
    let display_anonymous = display
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case("anonymous"));
    Caller {
        withheld: privacy_withheld
            || rpid_privacy
            || anonymous
            || (number.is_none() && display_anonymous),
        number,
        display,
        source,
    }
}

fn is_anonymous(uri: &Uri<'_>) -> bool {
    uri.host.eq_ignore_ascii_case(b"anonymous.invalid")
        || uri
            .user_number()
            .is_some_and(|u| ANONYMOUS_USERS.iter().any(|a| u.eq_ignore_ascii_case(a)))
}

/// The user parts that may name the ringing extension: the Request-URI's (the current target; the
/// dialplan sets the agent there) and To's (the logical target, which a forking proxy leaves
/// untouched; RFC 3261 §8.1.1.1–2, §16.5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// The Request-URI user, percent-decoded, without user parameters.
    pub ruri_user: Option<String>,
    /// The To user, percent-decoded, without user parameters.
    pub to_user: Option<String>,
}

impl Target {
    /// Reads both candidates from a request.
    pub fn of(msg: &Message<'_>, request_uri: &[u8]) -> Target {
        let user = |raw: &[u8]| {
            Uri::parse(raw)
                .ok()
                .and_then(|u| u.user_number())
                .map(|u| u.into_owned())
        };
        Target {
            ruri_user: user(request_uri),
            to_user: msg
                .headers
                .get(Name::To)
                .and_then(|t| NameAddr::parse(t).ok())
                .and_then(|na| user(na.uri)),
        }
    }

    /// The ringing extension: the first candidate `known` accepts, else the first that looks
    /// dialable, else the Request-URI user, else To's.
    pub fn extension(&self, known: impl Fn(&str) -> bool) -> Option<&str> {
        let both = [self.ruri_user.as_deref(), self.to_user.as_deref()];
        both.iter()
            .flatten()
            .find(|u| known(u))
            .or_else(|| both.iter().flatten().find(|u| is_dialable(u)))
            .or_else(|| both.iter().flatten().next())
            .copied()
    }
}

/// Digits with an optional leading `+`, and `*`/`#`: what a phone can dial.
pub fn is_dialable(user: &str) -> bool {
    let digits = user.strip_prefix('+').unwrap_or(user);
    !digits.is_empty()
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

/// The originally dialled number: the bottom `Diversion` entry (RFC 5806: each hop adds on top),
/// else the `History-Info` entry with the lowest index (RFC 7044 §4.2).
pub fn dialled(msg: &Message<'_>) -> Option<String> {
    let user = |na: &NameAddr<'_>| {
        Uri::parse(na.uri)
            .ok()
            .and_then(|u| u.user_number())
            .map(|u| u.into_owned())
    };
    if let Some(bottom) = msg
        .all(Name::Diversion)
        .flat_map(split_list)
        .filter_map(|e| NameAddr::parse(e).ok())
        .last()
    {
        return user(&bottom);
    }
    msg.all(Name::HistoryInfo)
        .flat_map(split_list)
        .filter_map(|e| NameAddr::parse(e).ok())
        .filter_map(|na| Some((history_index(param(na.params, "index")?)?, na)))
        .min_by(|(a, _), (b, _)| a.cmp(b))
        .and_then(|(_, na)| user(&na))
}

/// Whether a CANCEL says the call was answered on another branch: a `Reason` entry with
/// protocol `SIP` and `cause=200` [RFC 3326 §2; RFC 3261 §9.1 practice, "Call completed
/// elsewhere"]. Read by the fork-target endpoint and by the HEP observer alike.
pub fn answered_elsewhere(msg: &Message<'_>) -> bool {
    msg.all(Name::Reason).flat_map(split_list).any(|entry| {
        let protocol = entry.split(|&b| b == b';').next().unwrap_or_default();
        trim(protocol).eq_ignore_ascii_case(b"SIP") && param(entry, "cause") == Some(&b"200"[..])
    })
}

/// Parses a History-Info index (`1.1.2`) into comparable parts.
fn history_index(raw: &[u8]) -> Option<Vec<u32>> {
    raw.split(|&b| b == b'.')
        .map(|p| std::str::from_utf8(p).ok()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telephony::sip::scan::{Transport, scan};

    fn invite(extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:2001@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
             From: \"From Name\" <sip:+15550001@pbx.example.com>;tag=1\r\nTo: <sip:2001@pbx.example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn caller_of(extra: &str) -> Caller {
        let bytes = invite(extra);
        caller(&scan(&bytes, Transport::Datagram).expect("valid"))
    }

    #[test]
    fn precedence_pai_then_rpid_then_from() {
        let c = caller_of("P-Asserted-Identity: <tel:+15550002>, \"Sip\" <sip:+15550003@h>\r\n");
        assert_eq!(
            (c.number.as_deref(), c.source),
            (Some("+15550002"), Source::Pai)
        );
        let c = caller_of(
            "Remote-Party-ID: <sip:2001@h>;party=called\r\nRemote-Party-ID: \"R\" <sip:+15550004@h>;party=calling;privacy=off\r\n",
        );
        assert_eq!(
            (c.number.as_deref(), c.display.as_deref(), c.source),
            (Some("+15550004"), Some("R"), Source::Rpid)
        );
        let c = caller_of("");
        assert_eq!(
            (c.number.as_deref(), c.display.as_deref(), c.source),
            (Some("+15550001"), Some("From Name"), Source::From)
        );
        assert!(!c.withheld);
    }

    #[test]
    fn withheld_forms() {
        assert!(caller_of("P-Asserted-Identity: <sip:+15550002@h>\r\nPrivacy: id\r\n").withheld);
        assert!(caller_of("Privacy: header;user\r\n").withheld);
        assert!(!caller_of("Privacy: none\r\n").withheld);
        assert!(
            caller_of("Remote-Party-ID: <sip:+1555@h>;party=calling;privacy=full\r\n").withheld
        );
        let anon = b"INVITE sip:2001@h SIP/2.0\r\nFrom: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\n\r\n";
        let c = caller(&scan(anon, Transport::Datagram).expect("ok"));
        assert!(c.withheld);
        assert_eq!((c.number, c.display.as_deref()), (None, Some("Anonymous")));
    }

    #[test]
    fn extension_choice() {
        let t = Target {
            ruri_user: Some("screenpop".into()),
            to_user: Some("2001".into()),
        };
        assert_eq!(t.extension(|_| false), Some("2001"));
        assert_eq!(t.extension(|u| u == "screenpop"), Some("screenpop"));
        let t = Target {
            ruri_user: None,
            to_user: Some("alice".into()),
        };
        assert_eq!(t.extension(|_| false), Some("alice"));
    }

    #[test]
    fn reason_cause_200_means_answered_elsewhere() {
        let with = |reason: &str| {
            let bytes =
                format!("CANCEL sip:2001@h SIP/2.0\r\nCall-ID: c\r\n{reason}\r\n").into_bytes();
            answered_elsewhere(&scan(&bytes, Transport::Datagram).expect("ok"))
        };
        assert!(with(
            "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n"
        ));
        assert!(with("Reason: Q.850;cause=16, SIP ;cause=200\r\n"));
        assert!(
            !with("Reason: Q.850;cause=200\r\n"),
            "a Q.850 cause 200 is not SIP's"
        );
        assert!(!with("Reason: SIP;cause=487\r\n"));
        assert!(!with(""));
    }

    #[test]
    fn originally_dialled() {
        let bytes = invite(
            "Diversion: <sip:2002@h>;reason=no-answer;counter=1\r\nDiversion: <sip:+18005550199@h>;reason=unconditional\r\n",
        );
        assert_eq!(
            dialled(&scan(&bytes, Transport::Datagram).expect("ok")).as_deref(),
            Some("+18005550199")
        );
        let bytes = invite(
            "History-Info: <sip:2001@h>;index=1.1.1, <sip:+18005550100@h>;index=1\r\nHistory-Info: <sip:600@h>;index=1.1\r\n",
        );
        assert_eq!(
            dialled(&scan(&bytes, Transport::Datagram).expect("ok")).as_deref(),
            Some("+18005550100")
        );
    }
}
