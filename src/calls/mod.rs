//! Call tracking: folds intake events into calls with legs, resolves the caller once per call,
//! and publishes every change.
//!
//! - `event`: what intakes report (`CallEvent`).
//! - `tracker`: the bounded call table and its state machine (`Calls`, `CallUpdate`).
//! - `log`: the call log in PostgreSQL, written in batches from a bounded buffer.
//! - `journal`: the recent calls in memory with the agents' notes, for the agent page.
//! - `history`: the `history` profile section, from the journal and the call log.
//! - `dial`: asking a PBX to place a call (agent's extension first), and the registry of the
//!   PBX connections that can.

pub mod dial;
mod event;
pub mod history;
// Public for embedding and for benches/alloc.rs, which wires the call path as the daemon does
// (`Daemon::journal` already hands it out).
pub mod journal;
pub mod log;
mod section;
mod spool;
mod tracker;

pub use event::{CallEvent, Caller, EndReason, IdentitySource, Intake};
pub use section::{CallLogConfig, CallsConfig};
pub use tracker::{
    Call, CallState, CallUpdate, Calls, Change, EventSink, Leg, LegState, Observer, TrackerConfig,
};

/// Metric `screenpop_call_log_pending`.
pub const CALL_LOG_PENDING: &str = "screenpop_call_log_pending";
/// Metric `screenpop_call_log_rows_total`.
pub const CALL_LOG_ROWS_TOTAL: &str = "screenpop_call_log_rows_total";
/// Metric `screenpop_call_log_write_errors_total`.
pub const CALL_LOG_WRITE_ERRORS_TOTAL: &str = "screenpop_call_log_write_errors_total";
/// Metric `screenpop_calls`.
pub const CALLS: &str = "screenpop_calls";
/// Metric `screenpop_calls_ended_total`.
pub const CALLS_ENDED_TOTAL: &str = "screenpop_calls_ended_total";
/// Metric `screenpop_calls_duplicates_total{intake}`: a leg reported ringing again (by
/// another intake, another node, a retransmission) and suppressed.
pub const DUPLICATES_TOTAL: &str = "screenpop_calls_duplicates_total";
/// Metric `screenpop_calls_total`.
pub const CALLS_TOTAL: &str = "screenpop_calls_total";
/// Metric `screenpop_resolutions_total`.
pub const RESOLUTIONS_TOTAL: &str = "screenpop_resolutions_total";
/// Metric `screenpop_spool_bytes`.
pub const SPOOL_BYTES: &str = "screenpop_spool_bytes";
/// Metric `screenpop_spool_max_bytes`.
pub const SPOOL_MAX_BYTES: &str = "screenpop_spool_max_bytes";
/// Metric `screenpop_spool_refused_total`.
pub const SPOOL_REFUSED_TOTAL: &str = "screenpop_spool_refused_total";
/// Metric `screenpop_spool_replayed_records_total`.
pub const SPOOL_REPLAYED_RECORDS_TOTAL: &str = "screenpop_spool_replayed_records_total";
/// Metric `screenpop_spool_torn_records_total`.
pub const SPOOL_TORN_RECORDS_TOTAL: &str = "screenpop_spool_torn_records_total";
/// Metric `screenpop_spool_write_errors_total`.
pub const SPOOL_WRITE_ERRORS_TOTAL: &str = "screenpop_spool_write_errors_total";
/// Metric `screenpop_spool_written_bytes_total`.
pub const SPOOL_WRITTEN_BYTES_TOTAL: &str = "screenpop_spool_written_bytes_total";
