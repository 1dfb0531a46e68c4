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

mod accept;
pub mod allow;
pub mod cti;
pub mod hep;
pub(crate) mod intake;
pub mod sip;
pub mod uac;
pub mod webhook;

// The client intakes: one line per kind, `folder: its config section` (see `intake`).
intake::registry! {
    /// Asterisk Manager Interface clients, `[[ami]]`.
    ami: AmiConfig,
    /// FreeSWITCH event-socket clients, `[[esl]]`.
    esl: EslConfig,
    /// RFC 4235 dialog-event subscriptions, `[[dialog]]`.
    dialog: DialogConfig,
}

/// Metric `screenpop_cti_connected`.
pub const CTI_CONNECTED: &str = "screenpop_cti_connected";
/// Metric `screenpop_cti_event_lag_seconds`.
pub const CTI_EVENT_LAG_SECONDS: &str = "screenpop_cti_event_lag_seconds";
/// Metric `screenpop_cti_events_total`.
pub const CTI_EVENTS_TOTAL: &str = "screenpop_cti_events_total";
/// Metric `screenpop_cti_garbage_total`.
pub const CTI_GARBAGE_TOTAL: &str = "screenpop_cti_garbage_total";
/// Metric `screenpop_cti_reconnects_total`.
pub const CTI_RECONNECTS_TOTAL: &str = "screenpop_cti_reconnects_total";
/// Metric `screenpop_cti_resyncs_total`.
pub const CTI_RESYNCS_TOTAL: &str = "screenpop_cti_resyncs_total";
/// Metric `screenpop_cti_subscribed`.
pub const CTI_SUBSCRIBED: &str = "screenpop_cti_subscribed";
/// Metric `screenpop_hep_packets_total`.
pub const HEP_PACKETS_TOTAL: &str = "screenpop_hep_packets_total";
/// Metric `screenpop_sip_messages_total`.
pub const SIP_MESSAGES_TOTAL: &str = "screenpop_sip_messages_total";
/// Metric `screenpop_sip_parse_errors_total`.
pub const SIP_PARSE_ERRORS_TOTAL: &str = "screenpop_sip_parse_errors_total";
/// Metric `screenpop_sip_invites_tolerated_total{class}`: INVITEs taken although a full UAS
/// would refuse them (`require`, `body_type`, `accept`; see `sip::check`).
pub const SIP_INVITES_TOLERATED_TOTAL: &str = "screenpop_sip_invites_tolerated_total";
/// Metric `screenpop_sip_rejected_total`.
pub const SIP_REJECTED_TOTAL: &str = "screenpop_sip_rejected_total";
/// Metric `screenpop_sip_responses_total`.
pub const SIP_RESPONSES_TOTAL: &str = "screenpop_sip_responses_total";
/// Metric `screenpop_sip_retransmissions_total`.
pub const SIP_RETRANSMISSIONS_TOTAL: &str = "screenpop_sip_retransmissions_total";
/// Metric `screenpop_sip_transactions`.
pub const SIP_TRANSACTIONS: &str = "screenpop_sip_transactions";
