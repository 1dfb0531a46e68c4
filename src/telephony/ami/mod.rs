//! Asterisk Manager Interface intake: a client that logs in to Asterisk, keeps the connection
//! alive, resyncs after every (re)connect, and turns channel and queue events into call events
//! [PROTOCOLS.md §3].
//!
//! - `frame`: `Key: Value` message framing (CRLF or LF), garbage-tolerant and bounded.
//! - `map`: AMI events → call events, correlated by `Linkedid`, applied idempotently.
//! - `client`: the connection loop (login, `CoreShowChannels` resync, `Ping`, backoff).
//! - `setup`: the least-privilege `manager.conf` stanza `screenpop ami-setup` prints.

pub(crate) mod client;
pub mod frame;
pub mod map;
pub mod setup;

pub use client::{AmiConfig, AmiError, probe, run};
pub use map::Mapper;
