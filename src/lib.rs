//! screenpop: a call-center screen-pop daemon. When a customer calls, the agent's screen knows
//! who is ringing before the agent picks up.
//!
//! Calls flow down the stages, and every module imports only from the stages below it
//! (`docs/architecture.md` has the picture and where each kind of change goes). Modules are
//! private unless the binary, the tests or an adapter outside the crate need them.

// Cargo.toml only denies unsafe code (one bench needs a global allocator); the library forbids it.
#![forbid(unsafe_code)]

// The stages, in the order a call flows.
/// Who may see which extensions and which restricted sections.
pub mod agents;
/// Missed calls as callbacks: one per caller while open; claimed, done, or reached later.
pub mod callbacks;
/// The call table (ringing → answered → ended, legs per extension), the call log, the journal.
pub mod calls;
/// Several equal nodes on NATS JetStream: events shared, liveness, resync.
pub mod cluster;
/// Every source at once for the popped customer: timeouts, caches, breakers, display hints.
pub mod compose;
/// WebSocket delivery of pops, snapshots and the page's settings to agents.
pub mod push;
/// Caller number → E.164 → customer, from memory.
pub mod resolve;
/// Data-source adapters (postgres, http, csv): one system each.
pub mod sources;
/// PBX traffic in: SIP fork target, HEPv3, AMI, ESL, dialog subscriptions, the webhook.
pub mod telephony;
/// The HTTP listener: agent page, API, health, metrics, the webhook route.
pub mod web;

// Assembly and operation.
/// `check-config --connect`: every external peer a config names, reached once.
pub mod check;
/// The TOML file IT writes: loading, validation with file:line:key errors, assembly.
pub mod config;
/// Start-up and shutdown of every component.
pub mod daemon;
/// PostgreSQL connections and the schema migrations.
pub mod db;
/// The embedded demo and the PostgreSQL demo databases.
pub mod demo;
/// The accept loop of every TCP listener: budgets, eviction, idle timeouts, open-files limit.
pub mod listener;
/// The `screenpop lookup` report: what a number would pop, stage by stage.
pub mod lookup;
/// Applying a changed config (SIGHUP, `screenpop reload`) without dropping agents or calls.
pub mod reload;

// Leaves every stage may use.
/// The one retry delay: exponential, jittered.
mod backoff;
/// The customer record every stage shares.
mod customer;
/// The one time-window de-duplication (HEP copies, webhook retries).
mod dedup;
/// Metric names more than one module counts.
mod metric;
/// Masking phone numbers in logs unless PII logging is on.
pub mod pii;
/// Secrets that never print, and reading them from the environment.
mod secret;
/// Durations and counts in config sections.
mod serde_ext;
/// Failed sign-ins per source address.
mod throttle;
/// RFC 3339 timestamps.
mod time;
/// TLS for outgoing connections (AMI over TLS, HTTP sources, `screenpop call --tls`).
mod tls_client;
/// TLS for the listeners (HTTPS/WSS, SIP over TLS): certificates, client CA, reload.
pub mod tls_server;
