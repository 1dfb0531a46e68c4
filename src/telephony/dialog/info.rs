//! `application/dialog-info+xml` documents [RFC 4235 §4; PROTOCOLS.md §5 "Body"]: the NOTIFY
//! body a dialog-event notifier sends, read with `quick-xml`'s streaming namespace-aware reader
//! (no DOM, no entity expansion beyond the five predefined entities and character references).
//!
//! Owns the document's shape only: `version`, `state`, `entity`, and per `dialog` its `id`,
//! `call-id`, tags, `direction`, `state` (with `event` and `code`) and the remote identity. It does
//! not decide what a dialog means for a call: `map` does.
//!
//! Elements are taken when they are in the dialog-info namespace
//! (`urn:ietf:params:xml:ns:dialog-info`, under any prefix) or in no namespace at all (some
//! notifiers omit `xmlns`); elements of other namespaces (vendor extensions such as Asterisk's
//! `sa:` or Cisco's) are skipped with their content. Every input is bounded: the body, the depth,
//! the number of dialogs and each text kept; nothing panics.

use std::borrow::Cow;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

/// The dialog-info namespace [RFC 4235 §4.1].
pub const NAMESPACE: &[u8] = b"urn:ietf:params:xml:ns:dialog-info";
/// The MIME type of the body.
pub const CONTENT_TYPE: &str = "application/dialog-info+xml";
/// Largest body read (a UDP datagram cannot carry more anyway).
pub const MAX_BODY: usize = 64 * 1024;
/// Most `dialog` elements in one document; a document with more is refused.
pub const MAX_DIALOGS: usize = 256;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// Longest text or attribute value kept; longer ones are cut (at a character boundary).
pub const MAX_TEXT: usize = 512;

/// Why a body could not be read. The notifier (the PBX) is at fault in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// Over [`MAX_BODY`], [`MAX_DEPTH`] or [`MAX_DIALOGS`].
    #[error("dialog-info too large: {0}")]
    TooLarge(&'static str),
    /// Not well-formed XML.
    #[error("dialog-info is not well-formed XML")]
    Xml,
    /// Well-formed, but not a `dialog-info` document, or a required attribute is unusable.
    #[error("not a dialog-info document: {0}")]
    Invalid(&'static str),
}

/// `dialog-info/@state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocState {
    /// The complete set of the entity's dialogs: anything not listed is gone.
    Full,
    /// Only the dialogs that changed.
    Partial,
}

/// `dialog/@direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The entity sent the INVITE (an agent's outgoing call).
    Initiator,
    /// The entity received the INVITE (a call to the agent).
    Recipient,
}

/// `dialog/state` [RFC 4235 §3.7.1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// INVITE sent or received, no response yet.
    Trying,
    /// A provisional response without a To tag.
    Proceeding,
    /// A provisional response with a To tag: ringing.
    Early,
    /// Answered.
    Confirmed,
    /// Over.
    Terminated,
}

impl DialogState {
    /// A metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Proceeding => "proceeding",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated => "terminated",
        }
    }
}

/// One `dialog` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// `id` (else `call-id`): identifies the dialog within the entity's documents.
    pub id: String,
    /// `call-id`, when the notifier includes it (Asterisk does not).
    pub call_id: Option<String>,
    /// `local-tag`.
    pub local_tag: Option<String>,
    /// `remote-tag`.
    pub remote_tag: Option<String>,
    /// `direction`, when given.
    pub direction: Option<Direction>,
    /// The `state` element.
    pub state: DialogState,
    /// `state/@event`, lower-cased (`cancelled`, `rejected`, `replaced`, `local-bye`,
    /// `remote-bye`, `error`, `timeout`, or an extension).
    pub event: Option<String>,
    /// `state/@code`: the final response that ended or confirmed the dialog.
    pub code: Option<u16>,
    /// `remote/identity`: the other party's URI (the caller, for a recipient dialog).
    pub remote_identity: Option<String>,
    /// `remote/identity/@display`.
    pub remote_display: Option<String>,
}

/// A parsed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogInfo {
    /// `version`: rises by one with each document of a subscription [RFC 4235 §4.1.1]. `None`
    /// when the notifier omits it (then no ordering is possible).
    pub version: Option<u64>,
    /// `state`; a notifier that omits it is taken to send full state.
    pub state: DocState,
    /// `entity`: the watched URI.
    pub entity: Option<String>,
    /// The dialogs, in document order; those without a usable `id` or `state` are left out.
    pub dialogs: Vec<Dialog>,
}

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    Dialog,
    State,
    Remote,
    RemoteIdentity,
    /// Anything else (local, target, duration, route-set…, or a foreign namespace).
    Other,
}

/// A dialog being read.
#[derive(Debug, Default)]
struct Draft {
    id: Option<String>,
    call_id: Option<String>,
    local_tag: Option<String>,
    remote_tag: Option<String>,
    direction: Option<Direction>,
    state_text: String,
    state_seen: bool,
    event: Option<String>,
    code: Option<u16>,
    remote_identity: String,
    remote_identity_seen: bool,
    remote_display: Option<String>,
}

impl Draft {
    fn finish(self) -> Option<Dialog> {
        let state = match self.state_text.trim() {
            "trying" => DialogState::Trying,
            "proceeding" => DialogState::Proceeding,
            "early" => DialogState::Early,
            "confirmed" => DialogState::Confirmed,
            "terminated" => DialogState::Terminated,
            _ => return None,
        };
        let id = self.id.or_else(|| self.call_id.clone())?;
        let identity = self.remote_identity.trim();
        Some(Dialog {
            id,
            call_id: self.call_id,
            local_tag: self.local_tag,
            remote_tag: self.remote_tag,
            direction: self.direction,
            state,
            event: self.event,
            code: self.code,
            remote_identity: (self.remote_identity_seen && !identity.is_empty())
                .then(|| identity.to_owned()),
            remote_display: self.remote_display,
        })
    }
}

/// Appends `text` to `out`, keeping `out` within [`MAX_TEXT`] bytes.
fn push_bounded(out: &mut String, text: &str) {
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_TEXT {
            return;
        }
        out.push(c);
    }
}

/// A bounded, non-empty copy of an attribute value.
fn bounded(value: Cow<'_, str>) -> Option<String> {
    let mut out = String::new();
    push_bounded(&mut out, value.trim());
    (!out.is_empty()).then_some(out)
}

/// Whether an element belongs to dialog-info: its namespace, or none at all.
fn ours(ns: &ResolveResult<'_>) -> bool {
    match ns {
        ResolveResult::Bound(Namespace(uri)) => *uri == NAMESPACE,
        ResolveResult::Unbound => true,
        ResolveResult::Unknown(_) => false,
    }
}

/// The unprefixed attributes of an element, unescaped; a broken attribute fails the document.
fn attributes<'a>(
    e: &'a BytesStart<'_>,
) -> impl Iterator<Item = Result<(&'a [u8], Cow<'a, str>), InfoError>> + 'a {
    e.attributes().filter_map(|a| {
        let a = match a {
            Ok(a) => a,
            Err(_) => return Some(Err(InfoError::Xml)),
        };
        if a.key.prefix().is_some() {
            return None;
        }
        let key = a.key.local_name().into_inner();
        Some(
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map(|v| (key, Cow::Owned(v.into_owned())))
                .map_err(|_| InfoError::Xml),
        )
    })
}

/// Parses a dialog-info body.
pub fn parse(body: &[u8]) -> Result<DialogInfo, InfoError> {
    if body.len() > MAX_BODY {
        return Err(InfoError::TooLarge("body"));
    }
    let mut reader = NsReader::from_reader(body);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.check_end_names = true;
    let mut buf = Vec::new();
    let mut stack: Vec<Place> = Vec::new();
    let mut info: Option<DialogInfo> = None;
    let mut draft: Option<Draft> = None;
    loop {
        buf.clear();
        let (ns, event) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|_| InfoError::Xml)?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(InfoError::TooLarge("nesting"));
                }
                let name = e.local_name().into_inner();
                let parent = stack.last().copied();
                let mine = ours(&ns);
                let place = match parent {
                    None => {
                        if !mine || name != b"dialog-info" {
                            return Err(InfoError::Invalid("the root is not <dialog-info>"));
                        }
                        info = Some(root(&e)?);
                        Place::Root
                    }
                    Some(Place::Root) if mine && name == b"dialog" => {
                        let count = info.as_ref().map_or(0, |i| i.dialogs.len());
                        if count >= MAX_DIALOGS {
                            return Err(InfoError::TooLarge("dialogs"));
                        }
                        draft = Some(dialog(&e)?);
                        Place::Dialog
                    }
                    Some(Place::Dialog) if mine && name == b"state" => {
                        if let Some(d) = draft.as_mut() {
                            d.state_seen = true;
                            for attr in attributes(&e) {
                                let (key, value) = attr?;
                                match key {
                                    b"event" => {
                                        d.event = bounded(value).map(|v| v.to_ascii_lowercase())
                                    }
                                    b"code" => {
                                        d.code = value
                                            .trim()
                                            .parse::<u16>()
                                            .ok()
                                            .filter(|c| (100..700).contains(c))
                                    }
                                    _ => {}
                                }
                            }
                        }
                        Place::State
                    }
                    Some(Place::Dialog) if mine && name == b"remote" => Place::Remote,
                    Some(Place::Remote) if mine && name == b"identity" => {
                        if let Some(d) = draft.as_mut() {
                            d.remote_identity_seen = true;
                            for attr in attributes(&e) {
                                let (key, value) = attr?;
                                if key == b"display" {
                                    d.remote_display = bounded(value);
                                }
                            }
                        }
                        Place::RemoteIdentity
                    }
                    Some(_) => Place::Other,
                };
                stack.push(place);
            }
            Event::End(_) => match stack.pop() {
                Some(Place::Dialog) => {
                    if let (Some(d), Some(i)) = (draft.take(), info.as_mut())
                        && d.state_seen
                        && let Some(dialog) = d.finish()
                    {
                        i.dialogs.push(dialog);
                    }
                }
                Some(_) => {}
                None => return Err(InfoError::Xml),
            },
            Event::Text(t) => {
                let text = t.decode().map_err(|_| InfoError::Xml)?;
                text_into(stack.last(), draft.as_mut(), &text);
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|_| InfoError::Xml)?;
                text_into(stack.last(), draft.as_mut(), &text);
            }
            Event::GeneralRef(r) => {
                let resolved: Cow<'_, str> = match r.resolve_char_ref() {
                    Ok(Some(c)) => Cow::Owned(c.to_string()),
                    Ok(None) => {
                        let name = r.decode().map_err(|_| InfoError::Xml)?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => Cow::Borrowed(s),
                            // An entity we do not know (no DTD is ever read): not well-formed.
                            None => return Err(InfoError::Xml),
                        }
                    }
                    Err(_) => return Err(InfoError::Xml),
                };
                text_into(stack.last(), draft.as_mut(), &resolved);
            }
            Event::Eof => break,
            Event::Empty(_)
            | Event::Comment(_)
            | Event::Decl(_)
            | Event::PI(_)
            | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(InfoError::Xml);
    }
    info.ok_or(InfoError::Invalid("no <dialog-info> element"))
}

fn text_into(place: Option<&Place>, draft: Option<&mut Draft>, text: &str) {
    let Some(d) = draft else {
        return;
    };
    match place {
        Some(Place::State) => push_bounded(&mut d.state_text, text),
        Some(Place::RemoteIdentity) => push_bounded(&mut d.remote_identity, text),
        _ => {}
    }
}

fn root(e: &BytesStart<'_>) -> Result<DialogInfo, InfoError> {
    let mut info = DialogInfo {
        version: None,
        state: DocState::Full,
        entity: None,
        dialogs: Vec::new(),
    };
    for attr in attributes(e) {
        let (key, value) = attr?;
        match key {
            b"version" => {
                info.version = Some(
                    value
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| InfoError::Invalid("version is not a number"))?,
                )
            }
            b"state" => {
                info.state = match value.trim() {
                    "full" => DocState::Full,
                    "partial" => DocState::Partial,
                    _ => return Err(InfoError::Invalid("state is neither full nor partial")),
                }
            }
            b"entity" => info.entity = bounded(value),
            _ => {}
        }
    }
    Ok(info)
}

fn dialog(e: &BytesStart<'_>) -> Result<Draft, InfoError> {
    let mut d = Draft::default();
    for attr in attributes(e) {
        let (key, value) = attr?;
        match key {
            b"id" => d.id = bounded(value),
            b"call-id" => d.call_id = bounded(value),
            b"local-tag" => d.local_tag = bounded(value),
            b"remote-tag" => d.remote_tag = bounded(value),
            b"direction" => {
                d.direction = match value.trim() {
                    "initiator" => Some(Direction::Initiator),
                    "recipient" => Some(Direction::Recipient),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Kamailio 5.6 `presence_dialoginfo` sends it (captured from the test in
    /// `tests/kamailio.rs`; `pua_dialoginfo` with `include_localremote`).
    const KAMAILIO_EARLY: &str = r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:1001@pbx.test">
  <dialog id="padi-6b099ee4-38ab-1" call-id="1-14609@127.0.0.1" local-tag="14599SIPpTag011" remote-tag="14609SIPpTag001" direction="recipient">
    <state>early</state>
    <remote>
      <identity>sip:+14155550100@carrier.test</identity>
      <target uri="sip:+14155550100@127.0.0.1:25090"/>
    </remote>
    <local>
      <identity>sip:1001@pbx.test</identity>
      <target uri="sip:1001@127.0.0.1:25070"/>
    </local>
  </dialog>
</dialog-info>"#;

    #[test]
    fn reads_a_kamailio_document() {
        let info = parse(KAMAILIO_EARLY.as_bytes()).expect("valid");
        assert_eq!(info.version, Some(2));
        assert_eq!(info.state, DocState::Full);
        assert_eq!(info.entity.as_deref(), Some("sip:1001@pbx.test"));
        assert_eq!(info.dialogs.len(), 1);
        let d = &info.dialogs[0];
        assert_eq!(d.id, "padi-6b099ee4-38ab-1");
        assert_eq!(d.call_id.as_deref(), Some("1-14609@127.0.0.1"));
        assert_eq!(d.direction, Some(Direction::Recipient));
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(
            d.remote_identity.as_deref(),
            Some("sip:+14155550100@carrier.test"),
            "the remote identity, not the local one"
        );
        assert_eq!(d.remote_display, None);
    }

    #[test]
    fn prefixes_foreign_namespaces_and_attributes() {
        // Asterisk-style: a prefixed dialog-info namespace, a vendor namespace, display escaped.
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<di:dialog-info xmlns:di="urn:ietf:params:xml:ns:dialog-info" xmlns:sa="urn:ietf:params:xml:ns:sa-dialog-info" version="7" state="partial" entity="sip:2001@pbx">
 <di:dialog id="2001" direction="recipient">
  <sa:exten>2001</sa:exten>
  <di:state event="cancelled" code="487">terminated</di:state>
  <sa:remote><di:identity>sip:spoof@evil</di:identity></sa:remote>
  <di:remote><di:identity display="O&apos;Brien &amp; Sons">sip:%2B1555@pbx</di:identity></di:remote>
 </di:dialog>
</di:dialog-info>"#;
        let info = parse(doc.as_bytes()).expect("valid");
        assert_eq!(info.state, DocState::Partial);
        assert_eq!(info.version, Some(7));
        let d = &info.dialogs[0];
        assert_eq!(d.call_id, None);
        assert_eq!(d.state, DialogState::Terminated);
        assert_eq!(d.event.as_deref(), Some("cancelled"));
        assert_eq!(d.code, Some(487));
        assert_eq!(d.remote_identity.as_deref(), Some("sip:%2B1555@pbx"));
        assert_eq!(d.remote_display.as_deref(), Some("O'Brien & Sons"));
    }

    #[test]
    fn entities_and_cdata_in_text() {
        let doc = "<dialog-info version='1' state='full'><dialog id='a'><state> confirmed </state>\
            <remote><identity>sip:a&amp;b@h&#x2e;example</identity></remote></dialog>\
            <dialog id='b'><state><![CDATA[early]]></state></dialog></dialog-info>";
        let info = parse(doc.as_bytes()).expect("valid");
        assert_eq!(info.dialogs.len(), 2);
        assert_eq!(info.dialogs[0].state, DialogState::Confirmed);
        assert_eq!(
            info.dialogs[0].remote_identity.as_deref(),
            Some("sip:a&b@h.example")
        );
        assert_eq!(info.dialogs[1].state, DialogState::Early);
    }

    #[test]
    fn empty_documents_and_unusable_dialogs() {
        let info = parse(br#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:1@h"/>"#)
            .expect("no dialogs is valid");
        assert!(info.dialogs.is_empty());
        let info = parse(b"<dialog-info version='3'><dialog id='x'><state>ringing</state></dialog><dialog id='y'/><dialog><state>early</state></dialog></dialog-info>")
            .expect("valid");
        assert!(info.dialogs.is_empty(), "unknown state, no state, no id");
        assert_eq!(info.state, DocState::Full, "state omitted: full");
    }

    #[test]
    fn refusals() {
        for (doc, want) in [
            ("", InfoError::Invalid("no <dialog-info> element")),
            (
                "<presence/>",
                InfoError::Invalid("the root is not <dialog-info>"),
            ),
            (
                "<x:dialog-info xmlns:x='urn:other'/>",
                InfoError::Invalid("the root is not <dialog-info>"),
            ),
            ("<dialog-info version='1'><dialog>", InfoError::Xml),
            ("<dialog-info version='1'></dialog>", InfoError::Xml),
            (
                "<dialog-info version='-1'/>",
                InfoError::Invalid("version is not a number"),
            ),
            (
                "<dialog-info state='some'/>",
                InfoError::Invalid("state is neither full nor partial"),
            ),
            (
                "<dialog-info><dialog id='a'><state>&lol;</state></dialog></dialog-info>",
                InfoError::Xml,
            ),
        ] {
            assert_eq!(parse(doc.as_bytes()), Err(want), "{doc}");
        }
        let deep = format!(
            "<dialog-info>{}{}</dialog-info>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert_eq!(parse(deep.as_bytes()), Err(InfoError::TooLarge("nesting")));
        let many = format!(
            "<dialog-info>{}</dialog-info>",
            "<dialog id='d'><state>early</state></dialog>".repeat(MAX_DIALOGS + 1)
        );
        assert_eq!(parse(many.as_bytes()), Err(InfoError::TooLarge("dialogs")));
    }

    #[test]
    fn the_fixtures() {
        let fixture = |name: &str| {
            let path = format!(
                "{}/tests/fixtures/dialog/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            parse(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let fs = fixture("freeswitch-early.xml");
        assert_eq!(fs.dialogs[0].remote_display.as_deref(), Some("ACME Corp"));
        assert_eq!(
            fs.dialogs[0].remote_identity.as_deref(),
            Some("sip:+14155550100@10.0.0.6")
        );
        let ast = fixture("asterisk-confirmed.xml");
        assert_eq!(
            (ast.dialogs[0].id.as_str(), ast.dialogs[0].direction),
            ("2001", None)
        );
        let rfc = fixture("rfc4235-partial.xml");
        assert_eq!(rfc.state, DocState::Partial);
        let d = &rfc.dialogs[1];
        assert_eq!((d.event.as_deref(), d.code), (Some("cancelled"), Some(487)));
        assert_eq!(d.remote_display.as_deref(), Some("Bob \"the builder\""));
        assert_eq!(
            fixture("kamailio-terminated.xml").dialogs[0].state,
            DialogState::Terminated
        );
        assert_eq!(fixture("asterisk-early.xml").version, Some(5));
        assert_eq!(fixture("kamailio-early.xml").dialogs.len(), 1);
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let doc = format!(
            "<dialog-info><dialog id='{long}'><state>early</state><remote><identity display='{long}'>sip:{long}</identity></remote></dialog></dialog-info>"
        );
        let info = parse(doc.as_bytes()).expect("valid");
        let d = &info.dialogs[0];
        assert!(d.id.len() <= MAX_TEXT && d.id.chars().all(|c| c == 'é'));
        assert!(
            d.remote_identity
                .as_deref()
                .is_some_and(|i| i.len() <= MAX_TEXT)
        );
    }
}
