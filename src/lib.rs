//! screenpop: a call-center screen-pop daemon. When a customer calls, the agent's screen knows
//! who is ringing before the agent picks up.
//!
//! # Layout
//! In the order data flows:
//! - [`telephony`]: SIP fork-target and HEPv3 listeners, Asterisk AMI and FreeSWITCH ESL clients,
//!   turning PBX traffic into call events.
//! - [`calls`]: the call table (ringing → answered → ended, legs per extension), the call log
//!   in PostgreSQL and the in-memory call journal.
//! - [`resolve`]: caller number → E.164 → customer, from memory.
//! - [`sources`]: data-source adapters (postgres, http, csv): one system each.
//! - [`compose`]: every source at once for the popped customer, with timeouts, caches,
//!   breakers; parts handed on as they arrive.
//! - [`agents`]: who may see which extensions (and which restricted sections).
//! - [`push`]: WebSocket delivery of pops to agents.
//! - [`web`]: the HTTP listener (agent page, API, health, metrics, the signed PBX webhook).
//! - [`config`]: the TOML file IT writes; [`daemon`]: start-up and shutdown; [`reload`]:
//!   applying a changed config (SIGHUP) without dropping agents or calls; [`demo`]: the
//!   embedded default and the PostgreSQL demo databases.
//! - [`db`]: PostgreSQL connections and the schema migrations.
//! - [`pii`], [`time`]: masking numbers in logs; RFC 3339 timestamps; [`throttle`]: failed
//!   sign-ins per source address.
//! - [`listener`]: the accept loop of every TCP listener (connection budgets, eviction of the
//!   least useful connection, idle timeouts, accept backoff, the open-files limit).
//! - [`customer`]: the customer record every stage shares; [`serde_ext`]: durations and
//!   counts in config sections; [`tls_client`]: TLS for outgoing
//!   connections; [`lookup`]: the `screenpop lookup` report.
//! - `backoff`, `dedup`: leaf helpers: the one retry delay (exponential, jittered) and the one
//!   time-window de-duplication (HEP copies, webhook retries).

pub mod agents;
mod backoff;
pub mod calls;
pub mod compose;
pub mod config;
pub mod customer;
pub mod daemon;
pub mod db;
mod dedup;
pub mod demo;
pub mod listener;
pub mod lookup;
pub mod metric;
pub mod pii;
pub mod push;
pub mod reload;
pub mod resolve;
pub mod secret;
pub mod serde_ext;
pub mod sources;
pub mod telephony;
pub mod throttle;
pub mod time;
pub mod tls_client;
pub mod web;
