//! Telephony intake: where call events come from.
//!
//! - `sip`: screenpop as a SIP parallel-fork target (UDP, TCP).
//! - `hep`: HEPv3 copies of SIP from capture agents (UDP, TCP).
//! - `ami`: the Asterisk Manager Interface event stream (a TCP client).
//! - `esl`: the FreeSWITCH event socket (a TCP client).
//! - `dialog`: RFC 4235 dialog-event subscriptions to a PBX (a SIP UAC over UDP).
//! - `cti`: what the event-stream intakes share (idempotent call book, metrics);
//!   the HTTP webhook (`webhook`, mounted by `web`) is the third of them.
//! - `intake`: the registry of PBX client intakes (one context, start/compare/stop alike).
//! - `allow`: source-address allow-lists shared by the listeners.
//! - `accept`: the SIP and HEP TCP listeners' allow-list, in front of the shared accept loop
//!   (`crate::listener`).
//! - `uac`: a minimal SIP client, for `screenpop call` and the tests.

pub mod accept;
pub mod allow;
pub mod ami;
pub mod cti;
pub mod dialog;
pub mod esl;
pub mod hep;
pub mod intake;
pub mod sip;
pub mod uac;
pub mod webhook;
