//! HEPv3 intake: SIP copies mirrored by Asterisk `res_hep`, FreeSWITCH `capture-server`,
//! Kamailio `siptrace`, OpenSIPS `proto_hep`. Passive: nothing is ever sent back.
//!
//! - `decode`: the borrowing, bounds-checked packet decoder.
//! - `observe`: authentication, de-duplication and turning observed SIP into call events.
//! - `listen`: the UDP and TCP listeners.

pub mod decode;
pub(crate) mod listen;
pub(crate) mod observe;
mod section;

pub use decode::{HepError, Packet, decode, encode};
pub use observe::HepObserver;
pub use section::HepConfig;
