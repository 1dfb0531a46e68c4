//! SIP dialog-event subscriptions (RFC 4235): screenpop subscribes to `Event: dialog` for each
//! agent extension at the PBX and turns the NOTIFYs into call events [PROTOCOLS.md §5]. Works
//! with Kamailio/OpenSIPS (`presence_dialoginfo` + `pua_dialoginfo`), FreeSWITCH
//! (`manage-presence`) and Asterisk (PJSIP hints), without any change to the dialplan.
//!
//! - `info`: the `application/dialog-info+xml` body (streaming, namespace-aware, bounded).
//! - `digest`: answering 401/407 challenges (MD5, SHA-256, `qop=auth`).
//! - `map`: dialogs → ringing / answered / ended, keyed by call, idempotent.
//! - `subscriber`: the subscriptions as a state machine without I/O (SUBSCRIBE, auth, refresh,
//!   NOTIFY, versions, resubscription with backoff).
//! - `client`: `[[dialog]]` and the task driving it from a UDP socket.

mod client;
mod digest;
pub mod info;
mod map;
pub mod subscriber;

pub use client::{DialogConfig, DialogError, probe, run};
pub use map::Mapper;
pub use subscriber::Subscriber;

/// The `input` label of the CTI metrics.
pub const INPUT: &str = "dialog";
