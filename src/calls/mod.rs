//! Call tracking: folds intake events into calls with legs, resolves the caller once per call,
//! and publishes every change.
//!
//! - `event`: what intakes report (`CallEvent`).
//! - `tracker`: the bounded call table and its state machine (`Calls`, `CallUpdate`).
//! - `log`: the call log in PostgreSQL, written in batches from a bounded buffer.
//! - `journal`: the recent calls in memory with the agents' notes, for the agent page.

pub mod event;
pub mod journal;
pub mod log;
pub mod spool;
pub mod tracker;

pub use event::{CallEvent, Caller, EndReason, IdentitySource, Intake};
pub use tracker::{
    Call, CallState, CallUpdate, Calls, Change, Leg, LegState, Observer, TrackerConfig,
};
