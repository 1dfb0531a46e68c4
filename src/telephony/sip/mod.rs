//! SIP as a parallel-fork target: scanning, identity, validation, replies, transactions and the
//! UDP, TCP and TLS listeners.
//!
//! Layout, in the order a datagram travels:
//! - `scan`: zero-copy start line, header block, body and stream framing.
//! - `grammar`: header values (lists, name-addr, URIs, Via, CSeq).
//! - `check`: which status a request deserves (400, 405, 415, 416, 420, 501, 505…).
//! - `identity`: caller, withheld, ringing extension, originally dialled number.
//! - `reply`: building responses that go back where the request came from (RFC 3581 rport).
//! - `endpoint`: the fork-target behaviour and the INVITE server transactions.
//! - `udp`, `tcp`: the listeners (`tcp` also serves SIP over TLS, on the decrypted stream).

pub mod check;
mod endpoint;
pub mod grammar;
pub mod identity;
pub mod reply;
pub mod scan;
mod section;
pub(crate) mod tcp;
pub(crate) mod udp;

// `ReplyPath` is what `Endpoint::handle` answers on; public so that a program embedding the
// endpoint (benches/alloc.rs) can call it.
pub use endpoint::{Endpoint, EndpointConfig, ReplyPath};
pub use scan::{Message, StartLine, Transport, scan};
pub use section::SipConfig;

/// Why a SIP message could not be taken. The PBX (or whoever sent it) is at fault in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SipError {
    /// The request is syntactically broken; the text becomes the 400 reason phrase.
    #[error("{0}")]
    Malformed(&'static str),
    /// The request line names a SIP version other than 2.0 (answered 505).
    #[error("SIP version not supported")]
    VersionNotSupported,
    /// A response that cannot be read; responses are dropped, never answered.
    #[error("bad response: {0}")]
    BadResponse(&'static str),
    /// Over a size cap (message, header block or header count).
    #[error("message too large")]
    TooLarge,
}

impl SipError {
    /// A short, stable label for metrics (`parse_errors_total{kind=…}`).
    pub fn kind(&self) -> &'static str {
        match self {
            SipError::Malformed(_) => "malformed",
            SipError::VersionNotSupported => "version",
            SipError::BadResponse(_) => "bad_response",
            SipError::TooLarge => "too_large",
        }
    }
}
