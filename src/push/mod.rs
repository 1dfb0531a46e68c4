//! Push: authenticated WebSocket delivery of pops to the agents whose extensions ring.
//!
//! - `message`: the protocol's messages (docs/protocol.md; schema/push-protocol.schema.json).
//! - `hub`: routing call updates to connections by extension, with bounded queues.
//! - `profiles`: the sections composed per live call, for snapshots and late legs.
//! - `session`: one connection: auth, ready + snapshot, reader and writer, heartbeat.
//!
//! The HTTP side (`GET /ws`, Origin check, connection cap, buffer sizes) is in `web`.

pub(crate) mod hub;
pub mod message;
mod profiles;
pub(crate) mod section;
pub(crate) mod session;

pub use hub::{Hub, Share};
pub use session::SessionConfig;

/// Metric `screenpop_push_client_messages_total`.
pub const PUSH_CLIENT_MESSAGES_TOTAL: &str = "screenpop_push_client_messages_total";
/// Metric `screenpop_push_connections`.
pub const PUSH_CONNECTIONS: &str = "screenpop_push_connections";
/// Metric `screenpop_push_drops_total`.
pub const PUSH_DROPS_TOTAL: &str = "screenpop_push_drops_total";
/// Metric `screenpop_push_fanout_seconds`.
pub const PUSH_FANOUT_SECONDS: &str = "screenpop_push_fanout_seconds";
/// Metric `screenpop_push_messages_total`.
pub const PUSH_MESSAGES_TOTAL: &str = "screenpop_push_messages_total";
/// Metric `screenpop_push_picks_total`.
pub const PUSH_PICKS_TOTAL: &str = "screenpop_push_picks_total";
/// Metric `screenpop_cluster_owner_silent_total`: calls whose owner shared no complete
/// profile in time, composed here instead.
pub const OWNER_SILENT_TOTAL: &str = "screenpop_cluster_owner_silent_total";
