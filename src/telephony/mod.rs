//! Telephony intake: where call events come from.
//!
//! - `sip`: screenpop as a SIP parallel-fork target (UDP, TCP).
//! - `hep`: HEPv3 copies of SIP from capture agents (UDP, TCP).
//! - `allow`: source-address allow-lists shared by the listeners.
//! - `accept`: the TCP accept loop shared by the listeners (allow-list, connection cap).
//! - `uac`: a minimal SIP client, for `screenpop call` and the tests.

pub mod accept;
pub mod allow;
pub mod hep;
pub mod sip;
pub mod uac;
