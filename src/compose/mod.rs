//! Profile composition: every configured source asked at once for the caller's customer, each
//! under its own timeout, its cache, its circuit breaker and its concurrency cap, all under one
//! overall deadline; each answer handed on the moment it arrives.
//!
//! - `breaker`: the per-source circuit breaker.
//! - `cache`: the per-source section cache (TTL, serve-stale-while-revalidate, shared misses).
//! - `display`: the per-source display hints the agent page renders a section by.
//!
//! The composer owns the policies the adapters do not: timeouts, caching, breaking, capping.
//! It never retries within a call: a failed source is reported, and the next call tries again
//! (or the breaker skips it).

mod breaker;
mod cache;
pub(crate) mod display;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::sources::{AdapterConfig, DynSource, SourceError, Who};
use breaker::{Admit, Breaker};
use cache::{Lookup, SectionCache};
use display::DisplayHints;

/// Customers cached per source, at most.
pub const CACHE_CAPACITY: u64 = 100_000;

/// `[compose]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeConfig {
    /// Every section not in by then is reported `timeout`, and `complete` is sent.
    #[serde(default = "default_deadline", with = "crate::serde_ext::duration")]
    pub deadline: Duration,
    /// Most compositions running at once (a call burst beyond it gets its sections as
    /// `skipped`, and the pops still go out at once).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
}

impl Default for ComposeConfig {
    fn default() -> Self {
        ComposeConfig {
            deadline: default_deadline(),
            max_in_flight: default_in_flight(),
        }
    }
}

fn default_in_flight() -> usize {
    2048
}

fn default_deadline() -> Duration {
    Duration::from_secs(3)
}

/// What the composer applies to one source, whatever its adapter.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceSettings {
    /// The section's name, unique: `balance`, `purchases`, `credit`…
    pub name: String,
    /// A title for the agent page (default: the name humanised); `display.title` wins.
    #[serde(default)]
    pub title: Option<String>,
    /// How the agent page shows the section (`[sources.display]`; absent: by its shape).
    #[serde(default)]
    pub display: Option<DisplayHints>,
    /// How long one fetch may take.
    #[serde(default = "default_timeout", with = "crate::serde_ext::duration")]
    pub timeout: Duration,
    /// How long a fetched section is served from cache (absent: no cache).
    #[serde(default, with = "crate::serde_ext::duration_opt")]
    pub cache_ttl: Option<Duration>,
    /// After `cache_ttl`, how much longer a section may be served stale while it is fetched
    /// again in the background (absent: never stale). The page shows its age.
    #[serde(default, with = "crate::serde_ext::duration_opt")]
    pub serve_stale: Option<Duration>,
    /// Consecutive failures (or timeouts) that open the circuit breaker (0: never).
    #[serde(default = "default_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker skips the source before one trial call.
    #[serde(default = "default_cooldown", with = "crate::serde_ext::duration")]
    pub breaker_cooldown: Duration,
    /// Most fetches in flight to this source; beyond it calls skip it.
    #[serde(default = "default_concurrency")]
    pub max_concurrent: usize,
    /// Agent roles allowed to see this section (empty: every agent). Others get
    /// `forbidden` and no data.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Members of the section's data that only some roles may see, by member name: e.g.
    /// `field_roles = { note = ["supervisor"] }`. The member is removed wherever it appears
    /// (the top object, objects in arrays, nested objects) for an agent without one of them.
    #[serde(default)]
    pub field_roles: std::collections::BTreeMap<String, Vec<String>>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_failures() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    32
}

/// `[[sources]]`: the composer's settings and the adapter's, in one table.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// The composer's settings.
    #[serde(flatten)]
    pub settings: SourceSettings,
    /// The adapter (`type = "postgres" | "http" | "csv"` and its keys).
    #[serde(flatten)]
    pub adapter: AdapterConfig,
}

/// Why a composer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A source's adapter cannot start.
    #[error("source `{name}`: {error}")]
    Source {
        /// The source's name.
        name: String,
        /// Why.
        error: crate::sources::BuildError,
    },
}

/// How a section turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Data (possibly null: nothing on file).
    Ok,
    /// The source failed.
    Error,
    /// No answer in time.
    Timeout,
    /// Not asked: breaker open, or too many fetches in flight.
    Skipped,
    /// This agent may not see it.
    Forbidden,
}

impl Status {
    /// A metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Skipped => "skipped",
            Status::Forbidden => "forbidden",
        }
    }
}

/// One source's answer for one customer.
#[derive(Debug, Clone)]
pub struct Part {
    /// The source's name.
    pub name: Arc<str>,
    /// Its title.
    pub title: Arc<str>,
    /// How it went.
    pub status: Status,
    /// The data, with `ok`.
    pub data: Option<Arc<Value>>,
    /// Why not, otherwise (no customer data).
    pub error: Option<String>,
    /// Age of a cached answer.
    pub age: Option<Duration>,
    /// Time taken for this call.
    pub elapsed: Duration,
    /// Roles allowed to see it (empty: all).
    pub roles: Arc<[String]>,
    /// Members of the data only some roles may see (see [`SourceSettings::field_roles`]).
    pub field_roles: FieldRoles,
    /// The source's display hints, when it has any.
    pub display: Option<Arc<DisplayHints>>,
}

/// Data members only some roles may see: (member name, roles), in name order.
pub type FieldRoles = Arc<[(String, Vec<String>)]>;

impl Part {
    /// Whether an agent with `roles` may see this part.
    pub fn allowed(&self, roles: &[String]) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r))
    }

    /// The members an agent with `roles` may not see, as a bit set over `field_roles` (0: all
    /// visible); agents with the same mask see the same data.
    pub fn hidden_mask(&self, roles: &[String]) -> u64 {
        self.field_roles
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, (_, allowed))| !allowed.iter().any(|r| roles.contains(r)))
            .fold(0, |mask, (i, _)| mask | (1 << i))
    }

    /// The part as an agent with `roles` sees it: forbidden, whole, or without the members
    /// its roles may not see.
    pub fn visible_to(&self, roles: &[String]) -> std::borrow::Cow<'_, Part> {
        if !self.allowed(roles) {
            return std::borrow::Cow::Owned(self.forbidden());
        }
        let mask = self.hidden_mask(roles);
        match &self.data {
            Some(data) if mask != 0 => {
                let hidden: Vec<&str> = self
                    .field_roles
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, (name, _))| name.as_str())
                    .collect();
                let mut data = (**data).clone();
                strip(&mut data, &hidden);
                std::borrow::Cow::Owned(Part {
                    data: Some(Arc::new(data)),
                    ..self.clone()
                })
            }
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

    /// The same part as an agent without the right sees it: no data.
    pub fn forbidden(&self) -> Part {
        Part {
            status: Status::Forbidden,
            data: None,
            error: Some("not available to your role".into()),
            age: None,
            ..self.clone()
        }
    }
}

/// Removes the members named `hidden` from every object in `value`.
fn strip(value: &mut Value, hidden: &[&str]) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !hidden.contains(&k.as_str()));
            for v in map.values_mut() {
                strip(v, hidden);
            }
        }
        Value::Array(items) => {
            for v in items {
                strip(v, hidden);
            }
        }
        _ => {}
    }
}

/// The end of a composition.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every source, in configured order.
    pub sources: Vec<Arc<str>>,
    /// Those that did not answer `ok`.
    pub missing: Vec<Arc<str>>,
    /// Time from start to the last answer (or the deadline).
    pub elapsed: Duration,
}

/// One configured source, running.
struct Slot {
    name: Arc<str>,
    title: Arc<str>,
    kind: &'static str,
    timeout: Duration,
    roles: Arc<[String]>,
    field_roles: FieldRoles,
    display: Option<Arc<DisplayHints>>,
    adapter: Box<dyn DynSource>,
    cache: Option<SectionCache>,
    breaker: Breaker,
    permits: Semaphore,
    fetches: AtomicU64,
}

/// The composer: every source, with its policies.
pub struct Composer {
    slots: Vec<Arc<Slot>>,
    deadline: Duration,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for Composer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composer")
            .field("sources", &self.names())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Composer {
    /// A composer with no sources yet, running at most [`default_in_flight`] compositions at
    /// once (see [`Composer::max_in_flight`]).
    pub fn new(deadline: Duration) -> Composer {
        Composer {
            slots: Vec::new(),
            deadline,
            in_flight: Arc::new(Semaphore::new(default_in_flight())),
        }
    }

    /// At most `n` compositions at once.
    pub fn max_in_flight(mut self, n: usize) -> Composer {
        self.in_flight = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// A place for one composition, or `None` when `max_in_flight` are running: then
    /// [`Composer::overloaded`] says so to the agent instead.
    pub fn try_begin(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Every section `skipped` (too many compositions at once), and the summary.
    pub fn overloaded(&self) -> (Vec<Part>, Summary) {
        metrics::counter!(crate::compose::COMPOSE_OVERLOADED_TOTAL).increment(1);
        let parts: Vec<Part> = self
            .slots
            .iter()
            .map(|slot| {
                slot.part(
                    Status::Skipped,
                    Some("too many calls at once; not fetched".into()),
                    Duration::ZERO,
                )
            })
            .collect();
        let summary = Summary {
            sources: self.names(),
            missing: self.names(),
            elapsed: Duration::ZERO,
        };
        (parts, summary)
    }

    /// Builds every configured source (`base`: the config file's folder); the error names the
    /// source.
    pub fn from_config(
        config: &ComposeConfig,
        sources: &[SourceConfig],
        base: &Path,
    ) -> Result<Composer, ComposeError> {
        let mut composer = Composer::new(config.deadline).max_in_flight(config.max_in_flight);
        for source in sources {
            let adapter = source
                .adapter
                .build(base)
                .map_err(|error| ComposeError::Source {
                    name: source.settings.name.clone(),
                    error,
                })?;
            composer = composer.with(&source.settings, source.adapter.kind(), adapter);
        }
        Ok(composer)
    }

    /// Adds a source: a built-in adapter, or one of an embedding program's own.
    pub fn with(
        mut self,
        settings: &SourceSettings,
        kind: &'static str,
        adapter: Box<dyn DynSource>,
    ) -> Composer {
        let hints = settings.display.as_ref();
        let title = match hints
            .and_then(|d| d.title.as_ref())
            .or(settings.title.as_ref())
        {
            Some(title) => title.clone(),
            None => display::humanise(&settings.name),
        };
        self.slots.push(Arc::new(Slot {
            name: Arc::from(settings.name.as_str()),
            title: Arc::from(title),
            kind,
            timeout: settings.timeout,
            roles: settings.roles.clone().into(),
            field_roles: settings
                .field_roles
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            display: hints.filter(|d| !d.is_empty()).cloned().map(Arc::new),
            adapter,
            cache: settings.cache_ttl.map(|ttl| {
                SectionCache::new(
                    ttl,
                    settings.serve_stale.unwrap_or_default(),
                    CACHE_CAPACITY,
                )
            }),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            permits: Semaphore::new(settings.max_concurrent.max(1)),
            fetches: AtomicU64::new(0),
        }));
        self
    }

    /// Warms every source (connections, statements) at once; for start-up, in the background.
    pub async fn warm(&self) {
        futures_util::future::join_all(self.slots.iter().map(|s| s.adapter.warm_boxed())).await;
    }

    /// The sources' names, in order.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// Whether there is nothing to compose.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A part another node composed, as this node's config says the source may be shown: its
    /// title, roles and display hints from here. `None` for a source not configured here.
    #[allow(clippy::too_many_arguments)]
    pub fn part_from(
        &self,
        name: &str,
        status: Status,
        data: Option<Value>,
        error: Option<String>,
        age: Option<Duration>,
        elapsed: Duration,
    ) -> Option<Part> {
        let slot = self.slots.iter().find(|s| &*s.name == name)?;
        Some(Part {
            name: slot.name.clone(),
            title: slot.title.clone(),
            status,
            data: data.map(Arc::new),
            error,
            age,
            elapsed,
            roles: slot.roles.clone(),
            field_roles: slot.field_roles.clone(),
            display: slot.display.clone(),
        })
    }

    /// How many times each source's adapter was called (cache hits and skips not counted).
    pub fn fetch_counts(&self) -> Vec<(Arc<str>, u64)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.fetches.load(Ordering::Relaxed)))
            .collect()
    }

    /// Asks every source about `who` at once; `on_part` gets each answer as it arrives. Returns
    /// when all have answered or the deadline passed (the rest are reported `timeout`).
    pub async fn compose(&self, who: &Who, mut on_part: impl FnMut(Part)) -> Summary {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let mut pending: FuturesUnordered<_> = self
            .slots
            .iter()
            .map(|slot| fetch_one(slot.clone(), who.clone()))
            .collect();
        let mut reported: Vec<Arc<str>> = Vec::with_capacity(self.slots.len());
        let mut missing = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some(part)) => {
                    if part.status != Status::Ok {
                        missing.push(part.name.clone());
                    }
                    reported.push(part.name.clone());
                    on_part(part);
                }
                Ok(None) => break,
                Err(_) => {
                    for slot in &self.slots {
                        if !reported.contains(&slot.name) {
                            slot.breaker.failure();
                            count(slot, Status::Timeout, deadline - started);
                            missing.push(slot.name.clone());
                            on_part(slot.part(
                                Status::Timeout,
                                Some("no answer before the call's deadline".into()),
                                deadline - started,
                            ));
                        }
                    }
                    break;
                }
            }
        }
        Summary {
            sources: self.names(),
            missing,
            elapsed: started.elapsed(),
        }
    }
}

impl Slot {
    fn part(&self, status: Status, error: Option<String>, elapsed: Duration) -> Part {
        Part {
            name: self.name.clone(),
            title: self.title.clone(),
            status,
            data: None,
            error,
            age: None,
            elapsed,
            roles: self.roles.clone(),
            field_roles: self.field_roles.clone(),
            display: self.display.clone(),
        }
    }

    fn ok(&self, data: Arc<Value>, age: Option<Duration>, elapsed: Duration) -> Part {
        Part {
            data: Some(data),
            age,
            ..self.part(Status::Ok, None, elapsed)
        }
    }
}

fn count(slot: &Slot, status: Status, elapsed: Duration) {
    metrics::counter!(crate::compose::SOURCE_REQUESTS_TOTAL, "source" => slot.name.to_string(), "status" => status.label())
        .increment(1);
    if matches!(status, Status::Ok | Status::Error | Status::Timeout) {
        metrics::histogram!(crate::compose::SOURCE_SECONDS, "source" => slot.name.to_string())
            .record(elapsed.as_secs_f64());
    }
}

/// One source for one customer: cache, breaker, cap, then the adapter under the timeout.
async fn fetch_one(slot: Arc<Slot>, who: Who) -> Part {
    let started = Instant::now();
    let key = who.customer.id().to_owned();
    if let Some(cache) = &slot.cache {
        match cache.lookup(&key).await {
            Lookup::Fresh(entry) => {
                metrics::counter!(crate::compose::SOURCE_CACHE_TOTAL, "source" => slot.name.to_string(), "result" => "fresh").increment(1);
                count(&slot, Status::Ok, started.elapsed());
                return slot.ok(
                    entry.data.clone(),
                    Some(entry.fetched.elapsed()),
                    started.elapsed(),
                );
            }
            Lookup::Stale(entry) => {
                metrics::counter!(crate::compose::SOURCE_CACHE_TOTAL, "source" => slot.name.to_string(), "result" => "stale").increment(1);
                if cache.begin_refresh(&key) {
                    tokio::spawn(refresh(slot.clone(), who.clone(), key.clone()));
                }
                count(&slot, Status::Ok, started.elapsed());
                return slot.ok(
                    entry.data.clone(),
                    Some(entry.fetched.elapsed()),
                    started.elapsed(),
                );
            }
            Lookup::Miss => {
                metrics::counter!(crate::compose::SOURCE_CACHE_TOTAL, "source" => slot.name.to_string(), "result" => "miss").increment(1);
            }
        }
    }
    if let Admit::No { retry_in } = slot.breaker.admit() {
        count(&slot, Status::Skipped, started.elapsed());
        return slot.part(
            Status::Skipped,
            Some(format!(
                "source failing; skipped for {}s",
                retry_in.as_secs().max(1)
            )),
            started.elapsed(),
        );
    }
    // Only a caller that really calls the adapter takes a permit: callers sharing a cached
    // fetch do not count against the cap.
    let call_adapter = async {
        let Ok(_permit) = slot.permits.try_acquire() else {
            return Err(Failure::Busy);
        };
        slot.fetches.fetch_add(1, Ordering::Relaxed);
        slot.adapter
            .fetch_boxed(&who)
            .await
            .map_err(Failure::Source)
    };
    let fetch = async {
        match &slot.cache {
            Some(cache) => cache
                .get_or_fetch(&key, call_adapter)
                .await
                .map(|entry| entry.data.clone())
                .map_err(|e| (*e).clone()),
            None => call_adapter.await.map(Arc::new),
        }
    };
    let outcome = tokio::time::timeout(slot.timeout, fetch).await;
    let elapsed = started.elapsed();
    match outcome {
        Ok(Ok(data)) => {
            slot.breaker.success();
            count(&slot, Status::Ok, elapsed);
            slot.ok(data, None, elapsed)
        }
        Ok(Err(Failure::Source(error))) => {
            fail(&slot, &error);
            count(&slot, Status::Error, elapsed);
            slot.part(Status::Error, Some(error.to_string()), elapsed)
        }
        Ok(Err(Failure::Busy)) => {
            count(&slot, Status::Skipped, elapsed);
            slot.part(
                Status::Skipped,
                Some("too many requests in flight to this source".into()),
                elapsed,
            )
        }
        Err(_) => {
            if slot.breaker.failure() {
                tracing::warn!(source = %slot.name, "Source timing out; circuit breaker open.");
            }
            count(&slot, Status::Timeout, elapsed);
            slot.part(
                Status::Timeout,
                Some(format!("no answer within {} ms", slot.timeout.as_millis())),
                elapsed,
            )
        }
    }
}

/// Why a fetch gave nothing.
#[derive(Debug, Clone)]
enum Failure {
    /// The adapter failed.
    Source(SourceError),
    /// The concurrency cap was reached: the adapter was not called.
    Busy,
}

fn fail(slot: &Slot, error: &SourceError) {
    let opened = slot.breaker.failure();
    tracing::warn!(%error, source = %slot.name, kind = slot.kind, breaker_open = slot.breaker.is_open(), "Source failed.");
    if opened {
        metrics::counter!(crate::compose::SOURCE_BREAKER_OPENED_TOTAL, "source" => slot.name.to_string())
            .increment(1);
    }
}

/// Serve-stale's background refresh: one per customer and source, under the source's timeout.
async fn refresh(slot: Arc<Slot>, who: Who, key: String) {
    let mut data = None;
    if slot.breaker.admit() == Admit::Yes
        && let Ok(_permit) = slot.permits.try_acquire()
    {
        slot.fetches.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(slot.timeout, slot.adapter.fetch_boxed(&who)).await {
            Ok(Ok(fresh)) => {
                slot.breaker.success();
                data = Some(fresh);
            }
            Ok(Err(error)) => fail(&slot, &error),
            Err(_) => {
                slot.breaker.failure();
            }
        }
    }
    if let Some(cache) = &slot.cache {
        cache.end_refresh(&key, data).await;
    }
}

/// Metric `screenpop_compose_overloaded_total`.
pub const COMPOSE_OVERLOADED_TOTAL: &str = "screenpop_compose_overloaded_total";
/// Metric `screenpop_source_breaker_opened_total`.
pub const SOURCE_BREAKER_OPENED_TOTAL: &str = "screenpop_source_breaker_opened_total";
/// Metric `screenpop_source_cache_total`.
pub const SOURCE_CACHE_TOTAL: &str = "screenpop_source_cache_total";
/// Metric `screenpop_source_requests_total`.
pub const SOURCE_REQUESTS_TOTAL: &str = "screenpop_source_requests_total";
/// Metric `screenpop_source_seconds`.
pub const SOURCE_SECONDS: &str = "screenpop_source_seconds";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::testing::who;
    use crate::sources::{Section, Source};
    use std::sync::atomic::AtomicBool;

    /// A source answering after `delay`, or failing while `down` is set.
    struct Fake {
        delay: Duration,
        down: Arc<AtomicBool>,
    }

    impl Source for Fake {
        async fn fetch(&self, who: &Who) -> Result<Section, SourceError> {
            tokio::time::sleep(self.delay).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unreachable("connection refused".into()));
            }
            Ok(serde_json::json!({ "id": who.customer.id() }))
        }
    }

    fn settings(name: &str, timeout_ms: u64) -> SourceSettings {
        SourceSettings {
            name: name.into(),
            title: None,
            display: None,
            timeout: Duration::from_millis(timeout_ms),
            cache_ttl: None,
            serve_stale: None,
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(10),
            max_concurrent: 4,
            roles: vec![],
            field_roles: Default::default(),
        }
    }

    fn fake(delay_ms: u64) -> (Box<dyn DynSource>, Arc<AtomicBool>) {
        let down = Arc::new(AtomicBool::new(false));
        (
            Box::new(Fake {
                delay: Duration::from_millis(delay_ms),
                down: down.clone(),
            }),
            down,
        )
    }

    async fn run(c: &Composer) -> (Vec<Part>, Summary) {
        let mut parts = Vec::new();
        let summary = c.compose(&who("c1", "A1"), |p| parts.push(p)).await;
        (parts, summary)
    }

    #[test]
    fn display_hints_come_from_the_sources_table_and_ride_on_every_part() {
        let table = |display: &str| {
            format!(
                "name = \"ar_balance\"\ntype = \"csv\"\npath = \"ar.csv\"\nkey_column = \"account\"\n{display}"
            )
        };
        let config: SourceConfig = toml::from_str(&table(
            "[display]\nview = \"balance\"\nlabels = { balance = \"Open balance\" }\n",
        ))
        .expect("a [[sources]] table with display hints");
        let hints = config.settings.display.clone().expect("hints");
        assert_eq!(hints.view, Some(display::View::Balance));
        let c = Composer::new(Duration::from_secs(3)).with(&config.settings, "fake", fake(1).0);
        let part = c.slots[0].part(Status::Skipped, None, Duration::ZERO);
        assert_eq!(&*part.title, "Ar balance", "the name humanised");
        assert_eq!(part.display.as_deref(), Some(&hints));
        assert_eq!(part.forbidden().display.as_deref(), Some(&hints));

        let err = toml::from_str::<SourceConfig>(&table("[display]\nview = \"pie\"\n"))
            .expect_err("an unknown view");
        assert!(
            err.message().contains("display.view: unknown view `pie`"),
            "{err}"
        );
        let err = toml::from_str::<SourceConfig>(&table(
            "[display]\nformats = { amount = \"money\", due = \"when\" }\n",
        ))
        .expect_err("an unknown format");
        assert!(
            err.message()
                .contains("display.formats.due: unknown format `when`"),
            "{err}"
        );

        let plain: SourceConfig = toml::from_str(&table("title = \"AR\"\n")).expect("no hints");
        let c = Composer::new(Duration::from_secs(3)).with(&plain.settings, "fake", fake(1).0);
        let part = c.slots[0].part(Status::Ok, None, Duration::ZERO);
        assert_eq!((&*part.title, part.display.is_none()), ("AR", true));
    }

    #[tokio::test(start_paused = true)]
    async fn parts_arrive_in_finishing_order_and_a_slow_source_times_out() {
        let c = Composer::new(Duration::from_secs(3))
            .with(&settings("slow", 500), "fake", fake(2_000).0)
            .with(&settings("fast", 500), "fake", fake(10).0)
            .with(&settings("medium", 500), "fake", fake(100).0);
        let (parts, summary) = run(&c).await;
        let order: Vec<(&str, Status)> = parts.iter().map(|p| (&*p.name, p.status)).collect();
        assert_eq!(
            order,
            [
                ("fast", Status::Ok),
                ("medium", Status::Ok),
                ("slow", Status::Timeout)
            ]
        );
        assert_eq!(parts[0].elapsed, Duration::from_millis(10));
        assert_eq!(parts[2].elapsed, Duration::from_millis(500));
        assert_eq!(summary.missing, [Arc::from("slow")]);
        assert_eq!(summary.elapsed, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn the_overall_deadline_ends_the_composition() {
        let c = Composer::new(Duration::from_millis(300))
            .with(&settings("a", 5_000), "fake", fake(1_000).0)
            .with(&settings("b", 5_000), "fake", fake(20).0);
        let (parts, summary) = run(&c).await;
        assert_eq!(parts.len(), 2);
        assert_eq!((&*parts[1].name, parts[1].status), ("a", Status::Timeout));
        assert_eq!(summary.elapsed, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_skips_a_dead_source_then_closes_when_it_is_back() {
        let (adapter, down) = fake(1);
        let c = Composer::new(Duration::from_secs(3)).with(&settings("s", 500), "fake", adapter);
        down.store(true, Ordering::SeqCst);
        let statuses = |parts: Vec<Part>| parts.iter().map(|p| p.status).collect::<Vec<_>>();
        assert_eq!(statuses(run(&c).await.0), [Status::Error]);
        assert_eq!(statuses(run(&c).await.0), [Status::Error]);
        assert_eq!(statuses(run(&c).await.0), [Status::Skipped], "open after 2");
        assert_eq!(c.fetch_counts()[0].1, 2, "a skipped source is not called");
        down.store(false, Ordering::SeqCst);
        assert_eq!(
            statuses(run(&c).await.0),
            [Status::Skipped],
            "still cooling down"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            statuses(run(&c).await.0),
            [Status::Ok],
            "the trial succeeds"
        );
        assert_eq!(statuses(run(&c).await.0), [Status::Ok], "closed again");
    }

    #[tokio::test]
    async fn cached_sections_carry_their_age_and_misses_are_shared() {
        let mut s = settings("s", 2_000);
        s.cache_ttl = Some(Duration::from_secs(60));
        let c = Arc::new(Composer::new(Duration::from_secs(3)).with(&s, "fake", fake(50).0));
        // Ten concurrent calls for one customer: one fetch.
        let calls = (0..10).map(|_| {
            let c = c.clone();
            async move { run(&c).await }
        });
        let results = futures_util::future::join_all(calls).await;
        assert!(results.iter().all(|(p, _)| p[0].status == Status::Ok));
        assert_eq!(c.fetch_counts()[0].1, 1);
        let (parts, _) = run(&c).await;
        assert!(parts[0].age.is_some(), "served from cache with its age");
        assert_eq!(c.fetch_counts()[0].1, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_cap_skips_beyond_it() {
        let c = Arc::new(Composer::new(Duration::from_secs(3)).with(
            &settings("s", 1_000),
            "fake",
            fake(100).0,
        ));
        let calls = (0..6).map(|_| {
            let c = c.clone();
            async move { run(&c).await.0[0].status }
        });
        let mut statuses = futures_util::future::join_all(calls).await;
        statuses.sort_by_key(|s| s.label());
        assert_eq!(statuses.iter().filter(|s| **s == Status::Ok).count(), 4);
        assert_eq!(
            statuses.iter().filter(|s| **s == Status::Skipped).count(),
            2
        );
        assert_eq!(c.fetch_counts()[0].1, 4);
    }

    #[tokio::test]
    async fn stale_sections_are_served_while_one_refresh_runs() {
        let mut s = settings("s", 2_000);
        s.cache_ttl = Some(Duration::from_millis(50));
        s.serve_stale = Some(Duration::from_secs(60));
        let c = Composer::new(Duration::from_secs(3)).with(&s, "fake", fake(30).0);
        run(&c).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (parts, _) = run(&c).await;
        assert_eq!(parts[0].status, Status::Ok);
        assert!(parts[0].age.is_some_and(|a| a >= Duration::from_millis(50)));
        assert!(
            parts[0].elapsed < Duration::from_millis(30),
            "not waiting for the source"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.fetch_counts()[0].1, 2, "one background refresh");
        let (parts, _) = run(&c).await;
        assert!(parts[0].age.is_some_and(|a| a < Duration::from_millis(150)));
    }
}
