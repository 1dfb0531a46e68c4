//! Dialog-info documents → call events [RFC 4235 §3.7.1; PROTOCOLS.md §5 "Pop"].
//!
//! | dialog (at a subscribed extension) | call event |
//! |---|---|
//! | `direction="recipient"`, `early` (or `proceeding`) | ringing at the extension; caller = `remote/identity` (unknown when absent: Asterisk omits it) |
//! | `confirmed`, after it rang | answered by the extension |
//! | `terminated`, after it rang | that leg ended: `event` cancelled → cancelled, rejected/error → rejected, timeout → timeout, replaced → answered elsewhere (a pickup) or completed, local-bye/remote-bye → completed; else from `code` (487 cancelled, 408/480 timeout, other ≥ 300 rejected); else completed if answered, cancelled if not |
//! | a `state="full"` document | a rebuild: legs of this extension it no longer lists end (completed if answered, else cancelled) |
//!
//! Calls are keyed by `call-id` when the notifier gives it (so a ring group watched at several
//! extensions is one call with several legs), else by extension, dialog `id` and a counter
//! (Asterisk reuses the extension as the `id` of every call). One [`Book`] per PBX makes the
//! events idempotent: a repeated document changes nothing, and the first leg to answer ends the
//! others `answered_elsewhere`. Outgoing calls (`initiator`) and dialogs first seen already
//! answered never pop.

use std::collections::{HashMap, HashSet};

use super::info::{DialogInfo, DialogState, Direction, DocState};
use crate::calls::Caller;
use crate::calls::{CallEvent, EndReason, Intake};
use crate::telephony::cti::{self, Book};
use crate::telephony::sip::grammar::{Scheme, Uri};

/// Most dialogs remembered per extension; beyond it new ones are dropped and counted.
pub const LEGS_PER_EXTENSION: usize = 1024;

#[derive(Debug)]
struct Leg {
    /// The book's call key.
    call: String,
    answered: bool,
}

/// The mapper for one PBX's subscriptions. Survives resubscriptions.
#[derive(Debug)]
pub struct Mapper {
    book: Book,
    /// Extension → dialog id → leg.
    legs: HashMap<String, HashMap<String, Leg>>,
    seq: u64,
}

/// The caller from `remote/identity`: the URI's user (sip/sips) or number (tel), and the display
/// name. `anonymous.invalid` hosts and the usual anonymous users mark the caller withheld.
pub fn caller(identity: Option<&str>, display: Option<&str>) -> Caller {
    let uri = identity.and_then(|i| Uri::parse(i.trim().as_bytes()).ok());
    let anonymous_host = uri.is_some_and(|u| u.host.eq_ignore_ascii_case(b"anonymous.invalid"));
    let number = uri
        .filter(|u| matches!(u.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel))
        .and_then(|u| u.user_number())
        .map(|n| n.into_owned());
    let mut caller = cti::caller(number.as_deref(), display);
    if anonymous_host {
        caller.withheld = true;
        caller.number = None;
    }
    caller
}

/// Why a leg that was `answered` (or not) ended, from `state/@event` and `@code`.
pub fn end_reason(event: Option<&str>, code: Option<u16>, answered: bool) -> EndReason {
    let done = if answered {
        EndReason::Completed
    } else {
        EndReason::Cancelled
    };
    match event {
        Some("cancelled") => EndReason::Cancelled,
        Some("rejected" | "error") => EndReason::Rejected,
        Some("timeout") => EndReason::Timeout,
        Some("replaced") if !answered => EndReason::AnsweredElsewhere,
        Some("replaced" | "local-bye" | "remote-bye") => done,
        _ => match code {
            Some(487) => EndReason::Cancelled,
            Some(408 | 480) => EndReason::Timeout,
            Some(c) if c >= 300 => EndReason::Rejected,
            _ => done,
        },
    }
}

impl Mapper {
    /// A mapper for the PBX named `pbx` (the call-key prefix).
    pub fn new(pbx: &str) -> Self {
        Mapper {
            book: Book::new(Intake::DIALOG, pbx),
            legs: HashMap::new(),
            seq: 0,
        }
    }

    /// How many dialogs are tracked at `ext`.
    pub fn legs(&self, ext: &str) -> usize {
        self.legs.get(ext).map_or(0, HashMap::len)
    }

    /// Applies one document received for `ext`.
    pub fn apply(&mut self, ext: &str, info: &DialogInfo) -> Vec<CallEvent> {
        let mut out = Vec::new();
        if info.state == DocState::Full {
            let listed: HashSet<&str> = info.dialogs.iter().map(|d| d.id.as_str()).collect();
            let gone: Vec<String> = self
                .legs
                .get(ext)
                .map(|legs| {
                    legs.keys()
                        .filter(|id| !listed.contains(id.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for id in gone {
                out.extend(self.end(ext, &id, None, None));
            }
        }
        for d in &info.dialogs {
            cti::count_event(super::INPUT, d.state.label());
            match d.state {
                DialogState::Early | DialogState::Proceeding => {
                    let known = self.legs.get(ext).is_some_and(|l| l.contains_key(&d.id));
                    if known || d.direction != Some(Direction::Recipient) {
                        continue;
                    }
                    let legs = self.legs.entry(ext.to_owned()).or_default();
                    if legs.len() >= LEGS_PER_EXTENSION {
                        metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "dialog_legs_full")
                            .increment(1);
                        continue;
                    }
                    let call = match &d.call_id {
                        Some(call_id) => call_id.clone(),
                        None => {
                            self.seq += 1;
                            format!("{ext}/{}#{}", d.id, self.seq)
                        }
                    };
                    let who = caller(d.remote_identity.as_deref(), d.remote_display.as_deref());
                    let event = self.book.ring(&call, ext, &who, None);
                    // A second dialog of one call at one extension (two devices of one AOR)
                    // rings nothing new, but its later states still belong to the call.
                    if event.is_some() || self.book.knows(&call) {
                        legs.insert(
                            d.id.clone(),
                            Leg {
                                call,
                                answered: false,
                            },
                        );
                    }
                    out.extend(event);
                }
                DialogState::Confirmed => {
                    let Some(leg) = self.legs.get_mut(ext).and_then(|l| l.get_mut(&d.id)) else {
                        continue;
                    };
                    if !leg.answered {
                        leg.answered = true;
                        out.extend(self.book.answer(&leg.call, Some(ext)));
                    }
                }
                DialogState::Terminated => {
                    out.extend(self.end(ext, &d.id, d.event.as_deref(), d.code));
                }
                DialogState::Trying => {}
            }
        }
        out
    }

    fn end(
        &mut self,
        ext: &str,
        id: &str,
        event: Option<&str>,
        code: Option<u16>,
    ) -> Option<CallEvent> {
        let legs = self.legs.get_mut(ext)?;
        let leg = legs.remove(id)?;
        let twin = legs.values().any(|l| l.call == leg.call);
        if legs.is_empty() {
            self.legs.remove(ext);
        }
        if twin {
            // Another dialog of the same call is still up at this extension.
            return None;
        }
        self.book
            .end_leg(&leg.call, ext, end_reason(event, code, leg.answered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telephony::dialog::info::parse;

    fn doc(version: u64, state: &str, dialogs: &str) -> DialogInfo {
        parse(
            format!(
                r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="{state}" entity="sip:x@pbx">{dialogs}</dialog-info>"#
            )
            .as_bytes(),
        )
        .expect("valid")
    }

    fn dialog(id: &str, call_id: Option<&str>, state: &str, extra: &str) -> String {
        let call_id = call_id
            .map(|c| format!(" call-id=\"{c}\""))
            .unwrap_or_default();
        format!(
            r#"<dialog id="{id}"{call_id} direction="recipient"><state{extra}>{state}</state><remote><identity display="Acme">sip:+14155550100@carrier</identity></remote></dialog>"#
        )
    }

    #[test]
    fn ring_answer_hang_up() {
        let mut m = Mapper::new("kam");
        let out = m.apply(
            "1001",
            &doc(1, "full", &dialog("d1", Some("c1"), "early", "")),
        );
        assert_eq!(out.len(), 1);
        let CallEvent::Ringing {
            key,
            intake,
            extension,
            caller,
            ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            (key.as_str(), *intake, extension.as_str()),
            ("kam:c1", Intake::DIALOG, "1001")
        );
        assert_eq!(caller.number.as_deref(), Some("+14155550100"));
        assert_eq!(caller.display.as_deref(), Some("Acme"));
        assert!(
            m.apply(
                "1001",
                &doc(2, "full", &dialog("d1", Some("c1"), "early", ""))
            )
            .is_empty(),
            "the same state again"
        );
        let out = m.apply(
            "1001",
            &doc(3, "full", &dialog("d1", Some("c1"), "confirmed", "")),
        );
        assert!(
            matches!(&out[..], [CallEvent::Answered { by: Some(b), .. }] if b == "1001"),
            "{out:?}"
        );
        let out = m.apply(
            "1001",
            &doc(
                4,
                "full",
                &dialog("d1", Some("c1"), "terminated", " event=\"remote-bye\""),
            ),
        );
        assert!(
            matches!(
                &out[..],
                [CallEvent::Ended {
                    reason: EndReason::Completed,
                    ..
                }]
            ),
            "{out:?}"
        );
        assert_eq!(m.legs("1001"), 0);
    }

    #[test]
    fn a_full_document_ends_what_it_no_longer_lists() {
        let mut m = Mapper::new("kam");
        m.apply(
            "1001",
            &doc(1, "full", &dialog("d1", Some("c1"), "early", "")),
        );
        m.apply(
            "1001",
            &doc(2, "partial", &dialog("d2", Some("c2"), "early", "")),
        );
        assert_eq!(m.legs("1001"), 2);
        let out = m.apply(
            "1001",
            &doc(3, "full", &dialog("d2", Some("c2"), "early", "")),
        );
        assert!(
            matches!(&out[..], [CallEvent::Ended { key, reason: EndReason::Cancelled, .. }] if key == "kam:c1"),
            "{out:?}"
        );
        let out = m.apply("1001", &doc(4, "full", ""));
        assert_eq!(out.len(), 1, "an empty full document ends everything");
        assert_eq!(m.legs("1001"), 0);
    }

    #[test]
    fn a_ring_group_is_one_call_and_the_loser_ends_answered_elsewhere() {
        let mut m = Mapper::new("kam");
        let early = doc(1, "full", &dialog("a", Some("c"), "early", ""));
        assert_eq!(m.apply("1001", &early).len(), 1);
        assert_eq!(m.apply("1002", &early).len(), 1);
        let out = m.apply(
            "1002",
            &doc(2, "full", &dialog("a", Some("c"), "confirmed", "")),
        );
        assert!(matches!(&out[..], [CallEvent::Answered { by: Some(b), .. }] if b == "1002"));
        let out = m.apply(
            "1001",
            &doc(2, "full", &dialog("a", Some("c"), "terminated", "")),
        );
        assert!(
            out.is_empty(),
            "the book already ended 1001 with the answer: {out:?}"
        );
    }

    #[test]
    fn asterisk_dialogs_without_call_id_or_identity_get_fresh_keys() {
        let mut m = Mapper::new("ast");
        let bare = |state: &str| {
            doc(
                1,
                "full",
                &format!(
                    r#"<dialog id="2001" direction="recipient"><state>{state}</state></dialog>"#
                ),
            )
        };
        let first = m.apply("2001", &bare("early"));
        let CallEvent::Ringing { key, caller, .. } = &first[0] else {
            panic!("{first:?}")
        };
        assert!(key.starts_with("ast:2001/2001#"), "{key}");
        assert_eq!((caller.number.as_deref(), caller.withheld), (None, false));
        // Asterisk's terminated dialog carries state only.
        let ended = m.apply(
            "2001",
            &doc(
                2,
                "full",
                r#"<dialog id="2001"><state>terminated</state></dialog>"#,
            ),
        );
        assert_eq!(ended.len(), 1);
        let second = m.apply("2001", &bare("early"));
        let CallEvent::Ringing { key: again, .. } = &second[0] else {
            panic!("{second:?}")
        };
        assert_ne!(
            key, again,
            "the next call on the same dialog id is a new call"
        );
    }

    #[test]
    fn outgoing_and_already_answered_dialogs_never_pop() {
        let mut m = Mapper::new("p");
        let out = m.apply(
            "1001",
            &doc(
                1,
                "full",
                r#"<dialog id="o" direction="initiator"><state>early</state></dialog><dialog id="c" direction="recipient"><state>confirmed</state></dialog><dialog id="t" direction="recipient"><state>trying</state></dialog>"#,
            ),
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            end_reason(Some("cancelled"), None, false),
            EndReason::Cancelled
        );
        assert_eq!(
            end_reason(Some("rejected"), Some(486), false),
            EndReason::Rejected
        );
        assert_eq!(
            end_reason(Some("replaced"), None, false),
            EndReason::AnsweredElsewhere
        );
        assert_eq!(
            end_reason(Some("replaced"), None, true),
            EndReason::Completed
        );
        assert_eq!(
            end_reason(Some("local-bye"), None, true),
            EndReason::Completed
        );
        assert_eq!(end_reason(Some("timeout"), None, false), EndReason::Timeout);
        assert_eq!(end_reason(None, Some(487), false), EndReason::Cancelled);
        assert_eq!(end_reason(None, Some(480), false), EndReason::Timeout);
        assert_eq!(end_reason(None, Some(603), false), EndReason::Rejected);
        assert_eq!(end_reason(None, None, false), EndReason::Cancelled);
        assert_eq!(end_reason(None, None, true), EndReason::Completed);
    }

    #[test]
    fn callers() {
        let c = caller(Some("sip:anonymous@anonymous.invalid"), Some("Anonymous"));
        assert!(c.withheld && c.number.is_none());
        let c = caller(Some("tel:+14155550100;phone-context=x"), None);
        assert_eq!(c.number.as_deref(), Some("+14155550100"));
        let c = caller(Some(" sip:%2B14155550100@h;user=phone "), Some("  "));
        assert_eq!(
            (c.number.as_deref(), c.display),
            (Some("+14155550100"), None)
        );
        let c = caller(Some("not a uri"), None);
        assert_eq!(c.number, None);
    }
}
