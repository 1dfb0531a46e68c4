//! The internal call events every intake produces: SIP fork, HEP mirror, and the CTI event
//! streams (Asterisk AMI, FreeSWITCH ESL, the HTTP webhook), and dialog-event subscriptions.
//!
//! An intake reports what it saw about one *leg* (one extension being rung) of one call; the
//! tracker folds legs into calls. Keys are scoped by intake (`sip:`, `hep:`) so two intakes
//! watching the same PBX never merge calls by accident; CTI keys are also prefixed with the
//! PBX's configured name (`pbx1:1731000.81`).

/// Which header the caller identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// `P-Asserted-Identity`.
    Pai,
    /// `Remote-Party-ID` with `party=calling`.
    Rpid,
    /// `From`.
    From,
}

/// The caller as the INVITE presents it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    /// The user part of the identity URI (tel: the number), percent-decoded, without user
    /// parameters (`;npdi;rn=…`, `;isub=…`). Not yet normalised to E.164.
    pub number: Option<String>,
    /// The display name, unescaped.
    pub display: Option<String>,
    /// Where the identity came from.
    pub source: IdentitySource,
    /// The caller asked not to be identified.
    pub withheld: bool,
}

/// Which intake reported an event: its label (`sip`, `ami`, …), which metrics, the call log
/// and the page carry. The built-in intakes' are below; a new intake names its own in its
/// folder (`const INTAKE: Intake = Intake::new("fritz")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Intake(&'static str);

impl Intake {
    /// screenpop as a SIP fork target.
    pub const SIP: Intake = Intake("sip");
    /// HEPv3 copies of SIP.
    pub const HEP: Intake = Intake("hep");
    /// The Asterisk Manager Interface event stream.
    pub const AMI: Intake = Intake("ami");
    /// The FreeSWITCH event socket.
    pub const ESL: Intake = Intake("esl");
    /// `POST /api/events` from a PBX's own dialplan or a cloud PBX.
    pub const WEBHOOK: Intake = Intake("webhook");
    /// RFC 4235 dialog-event subscriptions (`Event: dialog` NOTIFYs).
    pub const DIALOG: Intake = Intake("dialog");

    /// An intake labelled `label` (lower case, a metrics label).
    pub const fn new(label: &'static str) -> Intake {
        Intake(label)
    }

    /// Whether the intake reports a call's end after it is answered. Only the SIP fork target
    /// does not: it leaves the call at the CANCEL that tells it another phone answered.
    pub fn sees_hangup(&self) -> bool {
        *self != Intake::SIP
    }

    /// A metrics and key label.
    pub fn label(&self) -> &'static str {
        self.0
    }

    /// The intake labelled `label` (another node's events): a built-in one, or one of at most
    /// [`MAX_LABELS`] others, interned once each; beyond that, `None`.
    pub fn from_label(label: &str) -> Option<Intake> {
        const BUILT_IN: [Intake; 6] = [
            Intake::SIP,
            Intake::HEP,
            Intake::AMI,
            Intake::ESL,
            Intake::WEBHOOK,
            Intake::DIALOG,
        ];
        if let Some(known) = BUILT_IN.iter().find(|i| i.0 == label) {
            return Some(*known);
        }
        let valid = !label.is_empty()
            && label.len() <= 32
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return None;
        }
        static OTHERS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let mut others = OTHERS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = others.iter().find(|l| **l == label) {
            return Some(Intake(known));
        }
        if others.len() >= MAX_LABELS {
            return None;
        }
        // Bounded by MAX_LABELS: at most that many short strings live for the process.
        let leaked: &'static str = Box::leak(label.to_owned().into_boxed_str());
        others.push(leaked);
        Some(Intake(leaked))
    }
}

/// Most intake labels other than the built-in ones a node learns from its peers.
pub const MAX_LABELS: usize = 32;

impl<'de> serde::Deserialize<'de> for Intake {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let label = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Intake::from_label(&label)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown intake `{label}`")))
    }
}

impl serde::Serialize for Intake {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// Why a call (or one leg of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The caller hung up (or the PBX gave up) before anyone answered.
    Cancelled,
    /// The call was answered and later hung up.
    Completed,
    /// Another extension answered (RFC 3326 `Reason: SIP;cause=200`, or seen in HEP).
    AnsweredElsewhere,
    /// Nobody cancelled or answered within the ring timeout.
    Timeout,
    /// The callee's side refused it (a non-2xx final response: busy, declined…).
    Rejected,
    /// The tracker forgot it: past the maximum call age, or evicted from a full table.
    Expired,
    /// The daemon stopped while the call was still ringing or answered.
    Shutdown,
}

impl EndReason {
    /// Every reason, for parsing labels back.
    pub const ALL: [EndReason; 7] = [
        EndReason::Cancelled,
        EndReason::Completed,
        EndReason::AnsweredElsewhere,
        EndReason::Timeout,
        EndReason::Rejected,
        EndReason::Expired,
        EndReason::Shutdown,
    ];

    /// A metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Cancelled => "cancelled",
            EndReason::Completed => "completed",
            EndReason::AnsweredElsewhere => "answered_elsewhere",
            EndReason::Timeout => "timeout",
            EndReason::Rejected => "rejected",
            EndReason::Expired => "expired",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// What an intake saw. Serialised as is between the nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CallEvent {
    /// An extension started ringing.
    Ringing {
        /// Intake-scoped call key (the SIP Call-ID for SIP and HEP; PBX name and call id for CTI).
        key: String,
        /// Which intake.
        intake: Intake,
        /// The ringing extension.
        extension: String,
        /// Who is calling.
        caller: Caller,
        /// The originally dialled number (DID), if known.
        dialled: Option<String>,
    },
    /// The call was answered; by this extension if known.
    Answered {
        /// Intake-scoped call key.
        key: String,
        /// Which intake.
        intake: Intake,
        /// The answering extension, when the intake can tell.
        by: Option<String>,
    },
    /// A leg, or the whole call when `extension` is `None`, ended.
    Ended {
        /// Intake-scoped call key.
        key: String,
        /// Which intake.
        intake: Intake,
        /// The leg that ended, or `None` for the whole call.
        extension: Option<String>,
        /// Why.
        reason: EndReason,
    },
}

/// Longest display name kept, in characters; the rest is cut (a caller-supplied string ends up
/// in every agent's frame).
pub const MAX_DISPLAY_CHARS: usize = 128;

/// A caller-supplied text (display name, number) as agents may see it: control characters
/// (C0, DEL, C1) and the Unicode controls that reorder or hide text (bidirectional embeddings,
/// overrides and isolates, line and paragraph separators) become spaces, runs of spaces
/// collapse, and the result is trimmed and cut to [`MAX_DISPLAY_CHARS`]. Nothing left: `None`.
/// Applied once, where every intake's events enter the call table.
pub fn clean_text(text: &str) -> Option<String> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
    };
    if !text.chars().any(hidden) && text.trim() == text && !text.contains("  ") {
        return (!text.is_empty()).then(|| text.chars().take(MAX_DISPLAY_CHARS).collect());
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if hidden(c) { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let out: String = out.trim_end().chars().take(MAX_DISPLAY_CHARS).collect();
    let out = out.trim_end().to_owned();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::clean_text;

    #[test]
    fn control_characters_never_reach_agents() {
        assert_eq!(
            clean_text("Acme Front Desk").as_deref(),
            Some("Acme Front Desk")
        );
        assert_eq!(
            clean_text("Acme\r\nX-Injected: 1").as_deref(),
            Some("Acme X-Injected: 1")
        );
        assert_eq!(
            clean_text("\u{1b}[31mred\u{1b}[0m").as_deref(),
            Some("[31mred [0m")
        );
        assert_eq!(
            clean_text("abc\u{202e}gpj.exe").as_deref(),
            Some("abc gpj.exe")
        );
        assert_eq!(clean_text("\u{0}\u{7f}\u{85}\t "), None);
        assert_eq!(clean_text(""), None);
        assert_eq!(clean_text("  Bob   Smith ").as_deref(), Some("Bob Smith"));
        let long = "é".repeat(500);
        assert_eq!(
            clean_text(&long).map(|s| s.chars().count()),
            Some(super::MAX_DISPLAY_CHARS)
        );
    }
}
