//! FreeSWITCH event-socket intake (inbound mode: screenpop connects to mod_event_socket),
//! turning channel events into call events [PROTOCOLS.md §4].
//!
//! - `frame`: header block + `Content-Length` body framing, garbage-tolerant and bounded.
//! - `map`: JSON events and the `show calls` listing → call events, keyed by the a-leg UUID.
//! - `client`: the connection loop (auth, subscription, resync, liveness, backoff).

mod client;
pub mod frame;
pub mod map;

pub use client::{EslConfig, EslError, probe, run};
pub use map::Mapper;
