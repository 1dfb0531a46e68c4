//! AMI events → call events [PROTOCOLS.md §3; asterisk `main/manager_channels.c`,
//! `apps/app_queue.c`, `include/asterisk/channelstate.h`].
//!
//! Every leg of a call shares its `Linkedid` (the caller channel's `Uniqueid`); `Uniqueid` is per
//! channel. The *caller channel* is the one whose `Uniqueid` equals its `Linkedid`; every other
//! channel is a *callee leg*, and a callee leg whose channel names a known extension
//! (`PJSIP/2001-00000032`, `SIP/2001-…`, `Local/2001@ctx-…;1`, or a queue member `Interface`) is
//! an *agent leg*.
//!
//! | AMI | call event |
//! |---|---|
//! | `Newstate` / `Newchannel` ChannelState 5 (Ringing) on an agent leg; `AgentCalled` | ringing |
//! | `Newstate` ChannelState 6 (Up) on a ringing agent leg; `DialEnd` ANSWER; `AgentConnect`; `BridgeEnter` of an Up agent leg | answered |
//! | `DialEnd` other than ANSWER; `AgentRingNoAnswer`; `Hangup` of an agent leg | that leg ends |
//! | `Hangup` of the caller channel, or of the last channel of a Linkedid | the call ends |
//!
//! Caller: the caller channel's `CallerIDNum/Name`; on an agent leg its `ConnectedLineNum/Name`
//! (the same person, as the agent's phone shows it), which wins when present. Dialled: the
//! caller channel's `Exten` when first seen. Events are applied idempotently through the
//! [`Book`]: order varies between versions (AgentCalled before or after DialBegin) and repeats
//! change nothing.

use std::collections::HashMap;
use std::sync::Arc;

use super::frame::Message;
use crate::calls::Caller;
use crate::calls::{CallEvent, EndReason, Intake};
use crate::telephony::cti::{self, Book};

/// Most channels remembered; a resync forgets the ones the PBX no longer has.
pub const CHANNEL_CAPACITY: usize = 50_000;

/// The events the client handles (everything else is dropped before mapping). The names are
/// also the `kind` label of `screenpop_cti_events_total`.
pub const EVENTS: &[&str] = &[
    "Newchannel",
    "Newstate",
    "DialBegin",
    "DialEnd",
    "AgentCalled",
    "AgentConnect",
    "AgentRingNoAnswer",
    "BridgeEnter",
    "Hangup",
    "CoreShowChannel",
    "CoreShowChannelsComplete",
    "FullyBooted",
    "Shutdown",
];

/// The extension a channel or interface names: `PJSIP/2001-00000032` → `2001`,
/// `Local/2001@from-queue-00000001;1` → `2001`, `PJSIP/2001` → `2001`.
pub fn extension_of(channel: &str) -> Option<&str> {
    let (tech, rest) = channel.split_once('/')?;
    if tech.is_empty() {
        return None;
    }
    let resource = if tech.eq_ignore_ascii_case("Local") {
        rest.split(['@', ';', '/']).next()?
    } else {
        // `<resource>-<sequence>`: the sequence is hex digits appended by the channel driver.
        let rest = rest.split([';', '/']).next()?;
        match rest.rsplit_once('-') {
            Some((res, seq))
                if !res.is_empty()
                    && !seq.is_empty()
                    && seq.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                res
            }
            _ => rest,
        }
    };
    let resource = resource.split('@').next()?;
    (!resource.is_empty()).then_some(resource)
}

#[derive(Debug)]
struct Channel {
    linkedid: String,
    /// The extension, when this is an agent leg.
    extension: Option<String>,
    /// ConnectedLineNum/Name as last seen.
    connected: Option<Caller>,
    up: bool,
}

#[derive(Debug, Default)]
struct CallInfo {
    caller: Option<Caller>,
    dialled: Option<String>,
}

/// The mapper for one AMI connection's PBX. Survives reconnects.
pub struct Mapper {
    known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    channels: HashMap<String, Channel>,
    calls: HashMap<String, CallInfo>,
    book: Book,
    /// Uniqueids listed by the resync in progress.
    listed: Option<Vec<String>>,
}

impl std::fmt::Debug for Mapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapper")
            .field("channels", &self.channels.len())
            .field("book", &self.book)
            .finish_non_exhaustive()
    }
}

fn dial_status_reason(status: &str) -> EndReason {
    match status.to_ascii_uppercase().as_str() {
        "CANCEL" => EndReason::Cancelled,
        "NOANSWER" => EndReason::Timeout,
        _ => EndReason::Rejected, // BUSY, CONGESTION, CHANUNAVAIL, DONTCALL, TORTURE, INVALIDARGS
    }
}

/// Q.850 cause of a `Hangup` [asterisk `include/asterisk/causes.h`].
fn cause_reason(cause: Option<&str>) -> EndReason {
    match cause.and_then(|c| c.trim().parse::<u32>().ok()) {
        Some(26) => EndReason::AnsweredElsewhere,
        Some(17 | 21 | 34 | 38 | 41 | 42) => EndReason::Rejected,
        Some(18 | 19) => EndReason::Timeout,
        _ => EndReason::Cancelled,
    }
}

impl Mapper {
    /// A mapper for the PBX named `pbx`; `known` says whether an extension is an agent's.
    pub fn new(pbx: &str, known: Arc<dyn Fn(&str) -> bool + Send + Sync>) -> Self {
        Mapper {
            known,
            channels: HashMap::new(),
            calls: HashMap::new(),
            book: Book::new(Intake::AMI, pbx),
            listed: None,
        }
    }

    /// Calls the mapper holds (for tests and metrics).
    pub fn calls(&self) -> usize {
        self.book.len()
    }

    /// Learns the channel whose fields start with `prefix` (`""` or `"Dest"`) from a snapshot.
    /// Returns its Uniqueid.
    fn note(&mut self, msg: &Message, prefix: &str) -> Option<String> {
        let field = |name: &str| msg.get(&format!("{prefix}{name}"));
        let uniqueid = field("Uniqueid")?.to_owned();
        let linkedid = field("Linkedid").unwrap_or(&uniqueid).to_owned();
        self.book.touch(&linkedid);
        let is_caller = uniqueid == linkedid;
        if is_caller && (self.calls.contains_key(&linkedid) || self.calls.len() < CHANNEL_CAPACITY)
        {
            let info = self.calls.entry(linkedid.clone()).or_default();
            let c = cti::caller(field("CallerIDNum"), field("CallerIDName"));
            if c.number.is_some() || c.withheld {
                info.caller = Some(c);
            }
            if info.dialled.is_none() {
                info.dialled = field("Exten")
                    .filter(|e| !e.is_empty() && *e != "s")
                    .map(str::to_owned);
            }
        }
        let extension = if is_caller {
            None
        } else {
            field("Channel")
                .and_then(extension_of)
                .filter(|e| (self.known)(e))
                .map(str::to_owned)
        };
        let connected = cti::caller(field("ConnectedLineNum"), field("ConnectedLineName"));
        let connected = (connected.number.is_some() || connected.withheld).then_some(connected);
        let up = field("ChannelState") == Some("6");
        let room = self.channels.len() < CHANNEL_CAPACITY;
        match self.channels.get_mut(&uniqueid) {
            Some(ch) => {
                ch.linkedid = linkedid;
                if extension.is_some() {
                    ch.extension = extension;
                }
                if connected.is_some() {
                    ch.connected = connected;
                }
                ch.up |= up;
            }
            None if room => {
                self.channels.insert(
                    uniqueid.clone(),
                    Channel {
                        linkedid,
                        extension,
                        connected,
                        up,
                    },
                );
            }
            None => {
                metrics::counter!(crate::metric::DROPS_TOTAL, "reason" => "cti_book_full")
                    .increment(1);
            }
        }
        if let Some(listed) = &mut self.listed {
            listed.push(uniqueid.clone());
        }
        Some(uniqueid)
    }

    fn ring(&mut self, uniqueid: &str, extension: Option<&str>) -> Option<CallEvent> {
        let ch = self.channels.get_mut(uniqueid)?;
        if let Some(ext) = extension {
            ch.extension = Some(ext.to_owned());
        }
        let ext = ch.extension.clone()?;
        let info = self.calls.get(&ch.linkedid);
        let caller = ch
            .connected
            .clone()
            .or_else(|| info.and_then(|i| i.caller.clone()))
            .unwrap_or_else(|| cti::caller(None, None));
        let dialled = info.and_then(|i| i.dialled.clone());
        let linkedid = ch.linkedid.clone();
        self.book.ring(&linkedid, &ext, &caller, dialled.as_deref())
    }

    fn answer(&mut self, uniqueid: &str) -> Option<CallEvent> {
        let ch = self.channels.get_mut(uniqueid)?;
        ch.up = true;
        let ext = ch.extension.clone()?;
        let linkedid = ch.linkedid.clone();
        self.book.answer(&linkedid, Some(&ext))
    }

    fn end_leg(&mut self, uniqueid: &str, reason: EndReason) -> Option<CallEvent> {
        let ch = self.channels.get(uniqueid)?;
        let ext = ch.extension.clone()?;
        let linkedid = ch.linkedid.clone();
        self.book.end_leg(&linkedid, &ext, reason)
    }

    fn hangup(&mut self, uniqueid: &str, cause: Option<&str>) -> Vec<CallEvent> {
        let mut out = Vec::new();
        let Some(ch) = self.channels.get(uniqueid) else {
            return out;
        };
        let linkedid = ch.linkedid.clone();
        if ch.extension.is_some() {
            out.extend(self.end_leg(uniqueid, cause_reason(cause)));
        }
        self.channels.remove(uniqueid);
        let last = !self.channels.values().any(|c| c.linkedid == linkedid);
        if uniqueid == linkedid || last {
            out.extend(self.book.end_call(&linkedid, EndReason::Cancelled));
            if last {
                self.calls.remove(&linkedid);
            }
        }
        out
    }

    /// Applies one event; returns the call events it causes.
    pub fn apply(&mut self, msg: &Message) -> Vec<CallEvent> {
        let mut out = Vec::new();
        let Some(event) = msg.event() else {
            return out;
        };
        match event {
            "Newchannel" | "Newstate" => {
                let Some(uid) = self.note(msg, "") else {
                    return out;
                };
                match msg.get("ChannelState") {
                    Some("5") => out.extend(self.ring(&uid, None)),
                    Some("6") => out.extend(self.answer(&uid)),
                    _ => {}
                }
            }
            "DialBegin" => {
                self.note(msg, "");
                self.note(msg, "Dest");
            }
            "DialEnd" => {
                self.note(msg, "");
                let Some(dest) = self.note(msg, "Dest") else {
                    return out;
                };
                match msg.get("DialStatus").unwrap_or_default() {
                    "ANSWER" => out.extend(self.answer(&dest)),
                    // An empty status is a progress report, not an end.
                    "" | "RINGING" | "PROCEEDING" | "PROGRESS" => {}
                    status => out.extend(self.end_leg(&dest, dial_status_reason(status))),
                }
            }
            "AgentCalled" | "AgentConnect" | "AgentRingNoAnswer" => {
                self.note(msg, "");
                let interface_ext = msg
                    .get("Interface")
                    .and_then(extension_of)
                    .or_else(|| msg.get("DestChannel").and_then(extension_of))
                    .filter(|e| (self.known)(e))
                    .map(str::to_owned);
                let Some(dest) = self.note(msg, "Dest") else {
                    return out;
                };
                let Some(ext) = interface_ext else {
                    return out;
                };
                if let Some(ch) = self.channels.get_mut(&dest) {
                    ch.extension = Some(ext.clone());
                }
                match event {
                    "AgentCalled" => out.extend(self.ring(&dest, Some(&ext))),
                    "AgentConnect" => out.extend(self.answer(&dest)),
                    _ => out.extend(self.end_leg(&dest, EndReason::Timeout)),
                }
            }
            "BridgeEnter" => {
                if let Some(uid) = self.note(msg, "")
                    && msg.get("ChannelState") == Some("6")
                {
                    out.extend(self.answer(&uid));
                }
            }
            "Hangup" => {
                if let Some(uid) = self.note(msg, "") {
                    out.extend(self.hangup(&uid, msg.get("Cause")));
                }
            }
            _ => {}
        }
        out
    }

    /// A `CoreShowChannels` resync starts (after every login).
    pub fn begin_resync(&mut self) {
        self.book.begin_resync();
        self.listed = Some(Vec::new());
    }

    /// The resync was refused: nothing will be ended for want of a listing.
    pub fn abort_resync(&mut self) {
        self.listed = None;
        self.book.abort_resync();
    }

    /// One `CoreShowChannel` of the resync: a live channel. A ringing agent leg (state 5) pops
    /// again (a no-op if it already had), an Up one that rang counts as answered.
    pub fn resync_channel(&mut self, msg: &Message) -> Vec<CallEvent> {
        let mut out = Vec::new();
        if let Some(uid) = self.note(msg, "") {
            match msg.get("ChannelState") {
                Some("5") => out.extend(self.ring(&uid, None)),
                Some("6") => out.extend(self.answer(&uid)),
                _ => {}
            }
        }
        out
    }

    /// `CoreShowChannelsComplete`: channels not listed are gone, their legs end, and calls no
    /// listed channel belongs to end.
    pub fn finish_resync(&mut self) -> Vec<CallEvent> {
        let mut out = Vec::new();
        let Some(listed) = self.listed.take() else {
            return out;
        };
        let listed: std::collections::HashSet<String> = listed.into_iter().collect();
        let gone: Vec<String> = self
            .channels
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        let alive: std::collections::HashSet<String> = self
            .channels
            .iter()
            .filter(|(k, _)| listed.contains(*k))
            .map(|(_, c)| c.linkedid.clone())
            .collect();
        for uid in gone {
            // A leg gone while its call lives on ends alone; a call with nothing listed ends
            // as a whole in the book's finish_resync.
            if let Some(ch) = self.channels.get(&uid)
                && ch.extension.is_some()
                && alive.contains(&ch.linkedid)
            {
                out.extend(self.end_leg(&uid, EndReason::Cancelled));
            }
            self.channels.remove(&uid);
        }
        out.extend(self.book.finish_resync());
        let live: std::collections::HashSet<&String> =
            self.channels.values().map(|c| &c.linkedid).collect();
        self.calls.retain(|k, _| live.contains(k));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telephony::ami::frame::{Framer, Item};

    #[test]
    fn extensions_from_channel_names() {
        assert_eq!(extension_of("PJSIP/2001-00000032"), Some("2001"));
        assert_eq!(extension_of("SIP/2001-0000000a"), Some("2001"));
        assert_eq!(
            extension_of("Local/2001@from-queue-00000001;1"),
            Some("2001")
        );
        assert_eq!(extension_of("PJSIP/2001"), Some("2001"));
        assert_eq!(
            extension_of("PJSIP/alice-phone-0000001f"),
            Some("alice-phone")
        );
        assert_eq!(extension_of("IAX2/2001@pbx/1234"), Some("2001"));
        assert_eq!(extension_of("nonsense"), None);
        assert_eq!(extension_of("/2001"), None);
        assert_eq!(extension_of("PJSIP/"), None);
    }

    fn messages(text: &str) -> Vec<Message> {
        let mut f = Framer::new();
        f.buffer().extend_from_slice(text.as_bytes());
        std::iter::from_fn(|| f.next_item())
            .filter_map(|i| match i {
                Item::Message(m) => Some(m),
                Item::Garbage => None,
            })
            .collect()
    }

    fn mapper() -> Mapper {
        Mapper::new("pbx", Arc::new(|e: &str| e == "2001" || e == "2002"))
    }

    const RING: &str = "Event: Newchannel\nChannel: PJSIP/trunk-00000031\nChannelState: 4\nCallerIDNum: +14155550100\nCallerIDName: Acme\nExten: 18005550199\nUniqueid: 1.31\nLinkedid: 1.31\n\n\
        Event: Newchannel\nChannel: PJSIP/2001-00000032\nChannelState: 0\nUniqueid: 1.32\nLinkedid: 1.31\n\n\
        Event: Newstate\nChannel: PJSIP/2001-00000032\nChannelState: 5\nConnectedLineNum: +14155550100\nConnectedLineName: Acme\nUniqueid: 1.32\nLinkedid: 1.31\n\n";

    #[test]
    fn a_ringing_agent_leg_pops_once() {
        let mut m = mapper();
        let mut out = Vec::new();
        for msg in messages(RING).iter().chain(messages(RING).iter()) {
            out.extend(m.apply(msg));
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let CallEvent::Ringing {
            key,
            extension,
            caller,
            dialled,
            ..
        } = &out[0]
        else {
            panic!("ringing")
        };
        assert_eq!((key.as_str(), extension.as_str()), ("pbx:1.31", "2001"));
        assert_eq!(caller.number.as_deref(), Some("+14155550100"));
        assert_eq!(dialled.as_deref(), Some("18005550199"));
    }

    #[test]
    fn unknown_extensions_and_the_caller_channel_never_pop() {
        let mut m = Mapper::new("pbx", Arc::new(|_: &str| false));
        let out: Vec<_> = messages(RING).iter().flat_map(|msg| m.apply(msg)).collect();
        assert!(out.is_empty());
    }

    #[test]
    fn hangup_of_the_caller_ends_the_call() {
        let mut m = mapper();
        for msg in messages(RING) {
            m.apply(&msg);
        }
        let out: Vec<_> = messages(
            "Event: DialEnd\nDestChannel: PJSIP/2001-00000032\nDestUniqueid: 1.32\nDestLinkedid: 1.31\nDialStatus: CANCEL\n\n\
             Event: Hangup\nChannel: PJSIP/trunk-00000031\nUniqueid: 1.31\nLinkedid: 1.31\nCause: 16\n\n",
        )
        .iter()
        .flat_map(|msg| m.apply(msg))
        .collect();
        assert!(matches!(
            out.as_slice(),
            [CallEvent::Ended {
                extension: Some(_),
                reason: EndReason::Cancelled,
                ..
            }]
        ));
        assert_eq!(m.calls(), 0);
    }

    #[test]
    fn a_resync_ends_a_vanished_leg_of_a_live_call() {
        let mut m = mapper();
        for msg in messages(RING) {
            m.apply(&msg);
        }
        let second = RING
            .replace("2001-00000032", "2002-00000033")
            .replace("1.32", "1.33");
        for msg in messages(&second) {
            m.apply(&msg);
        }
        m.begin_resync();
        // The caller and 2001 are listed; 2002's channel is gone.
        for msg in messages(RING)
            .iter()
            .filter(|m| m.get("Uniqueid") != Some("1.33"))
        {
            m.resync_channel(msg);
        }
        let out = m.finish_resync();
        assert!(
            matches!(out.as_slice(), [CallEvent::Ended { extension: Some(e), .. }] if e == "2002"),
            "{out:?}"
        );
        assert_eq!(m.calls(), 1);
    }

    #[test]
    fn events_without_ids_are_ignored() {
        let mut m = mapper();
        for text in [
            "Event: Newstate\nChannelState: 5\n\n",
            "Event: Hangup\n\n",
            "Event: DialEnd\nDialStatus: BUSY\n\n",
            "Event: AgentCalled\nInterface: PJSIP/2001\n\n",
        ] {
            for msg in messages(text) {
                assert!(m.apply(&msg).is_empty());
            }
        }
    }
}
