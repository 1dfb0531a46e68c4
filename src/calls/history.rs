//! The `history` profile section: what happened with this customer before. Built in, and
//! streamed like every other section (same `section` message, same roles and status).
//!
//! A customer's history is the calls attributed to them (matched, or picked by an agent) other
//! than the one ringing now, from two places merged by call id: the in-memory journal (every
//! call this daemon saw, with notes the moment they are saved) and, when a database is
//! configured, `call_log` (everything older, and what the other nodes logged). The newest
//! `limit` are listed; `calls_24h` and `calls_7d` count the earlier calls in the last 24 hours
//! and 7 days (rolling windows: the daemon does not know each agent's time zone), and `repeat`
//! says the customer already called in the last 24 hours.
//!
//! A slow or dead database degrades the section, never the pop: after `database_timeout` the
//! journal's part is shown with `"partial": true`, and the database is left alone for
//! [`DATABASE_PAUSE`] before it is asked again. Note text can be kept from some roles with
//! `note_roles` (applied by the composer's member roles, like any section's).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::EndReason;
use super::journal::{Entry, Journal};
use crate::serde_ext::duration;
use crate::sources::{Section, Source, SourceError, Who};

/// How long the history leaves an unresponsive database alone before asking it again.
pub const DATABASE_PAUSE: Duration = Duration::from_secs(5);
/// Most calls a history may list.
pub const MAX_LIMIT: usize = 50;

/// `[history]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Whether pops carry the `history` section.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How many earlier calls are listed (at most 50).
    #[serde(default = "default_limit", deserialize_with = "limit")]
    pub limit: usize,
    /// The section's title on the page.
    #[serde(default = "default_title")]
    pub title: String,
    /// Roles that may see the section (empty: every agent).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Roles that may read the agents' note text in it (empty: every agent who sees the
    /// section). The rest see the calls, outcomes and dispositions without the notes.
    #[serde(default)]
    pub note_roles: Vec<String>,
    /// The whole section's deadline.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// How long the call log in PostgreSQL is waited for before the journal's part is shown
    /// alone (`"partial": true`).
    #[serde(default = "default_database_timeout", with = "duration")]
    pub database_timeout: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            limit: default_limit(),
            title: default_title(),
            roles: Vec::new(),
            note_roles: Vec::new(),
            timeout: default_timeout(),
            database_timeout: default_database_timeout(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_limit() -> usize {
    5
}
fn default_title() -> String {
    "History".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_database_timeout() -> Duration {
    Duration::from_millis(400)
}

fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 || n > MAX_LIMIT {
        return Err(serde::de::Error::custom(format!(
            "{n} is out of range: list 1 to {MAX_LIMIT} calls"
        )));
    }
    Ok(n)
}

impl HistoryConfig {
    /// The composer's settings for the section: never cached (every call changes it), never
    /// broken off (a database failure is handled inside, as `partial`).
    pub fn settings(&self) -> crate::compose::SourceSettings {
        let mut field_roles = std::collections::BTreeMap::new();
        if !self.note_roles.is_empty() {
            field_roles.insert("note".to_owned(), self.note_roles.clone());
        }
        crate::compose::SourceSettings {
            name: NAME.into(),
            title: Some(self.title.clone()),
            display: Some(crate::compose::display::DisplayHints {
                view: Some(crate::compose::display::View::History),
                ..Default::default()
            }),
            timeout: self.timeout,
            cache_ttl: None,
            serve_stale: None,
            breaker_failures: u32::MAX,
            breaker_cooldown: Duration::from_secs(1),
            max_concurrent: 256,
            roles: self.roles.clone(),
            field_roles,
        }
    }
}

/// The section's name.
pub const NAME: &str = "history";

/// Where histories are read from: the journal (attached when the daemon starts it) and the
/// call log's database, if any. Shared by the composers a reload builds.
pub struct Store {
    journal: OnceLock<Arc<Journal>>,
    database: Option<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("journal", &self.journal.get().is_some())
            .field("database", &self.database.is_some())
            .finish()
    }
}

struct Database {
    pool: Pool,
    /// Until when the database is not asked (it just failed).
    paused_until: Mutex<Option<std::time::Instant>>,
}

impl Store {
    /// A store reading `call_log` at `database_url` when given (connections are made on first
    /// use); the error names what is wrong with the URL.
    pub fn new(database_url: Option<&str>) -> Result<Arc<Store>, String> {
        let database = match database_url {
            None => None,
            Some(url) => {
                let mut pg: tokio_postgres::Config = url
                    .parse()
                    .map_err(|e| format!("call log database_url: {e}"))?;
                // Plans per customer: a generic plan (chosen after five runs of a prepared
                // statement) may scan the last 7 days by start time instead of the customer's
                // own rows, 3 ms instead of 0.3 ms at a million rows.
                pg.connect_timeout(Duration::from_secs(2))
                    .keepalives(true)
                    .application_name("screenpop-history")
                    .options("-c plan_cache_mode=force_custom_plan");
                let pool = crate::db::pool(pg, 4, Some(Duration::from_secs(2)))
                    .map_err(|e| format!("call log {e}"))?;
                Some(Database {
                    pool,
                    paused_until: Mutex::new(None),
                })
            }
        };
        Ok(Arc::new(Store {
            journal: OnceLock::new(),
            database,
        }))
    }

    /// Reads the journal from now on (the daemon calls it once it has one).
    pub fn attach(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
    }
}

impl Database {
    /// Whether it failed a moment ago and is left alone for now.
    fn paused(&self) -> bool {
        let paused = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        paused.is_some_and(|until| std::time::Instant::now() < until)
    }

    fn pause(&self) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now() + DATABASE_PAUSE);
    }
}

/// The `history` source.
#[derive(Debug)]
pub struct History {
    store: Arc<Store>,
    limit: usize,
    database_timeout: Duration,
    call_back: Arc<str>,
}

impl History {
    /// The source over `store`, listing as `config` says, with call-back links from the
    /// `call_back` template (`[calls] call_back_url`).
    pub fn new(store: Arc<Store>, config: &HistoryConfig, call_back: &str) -> History {
        History {
            store,
            limit: config.limit,
            database_timeout: config.database_timeout,
            call_back: Arc::from(call_back),
        }
    }
}

/// A call in a history, whichever place it came from.
struct Item {
    call_id: String,
    started: SystemTime,
    extensions: Vec<String>,
    answered_extension: Option<String>,
    answered_by: Option<String>,
    answered_at: Option<SystemTime>,
    ended_at: Option<SystemTime>,
    /// The end reason's label; none while live.
    reason: Option<String>,
    disposition: Option<String>,
    note: Option<String>,
    noted_by: Option<String>,
    noted_at: Option<SystemTime>,
    /// The number the customer called from, unless withheld.
    number: Option<String>,
}

impl Item {
    fn from_entry(e: Entry) -> Item {
        Item {
            number: e.caller_number.filter(|_| !e.withheld),
            call_id: e.call_id,
            started: e.started,
            extensions: e.extensions,
            answered_extension: e.answered_extension,
            answered_by: e.answered_by,
            answered_at: e.answered_at,
            ended_at: e.ended_at,
            reason: e.outcome.map(str::to_owned),
            disposition: e.disposition,
            note: e.note,
            noted_by: e.noted_by,
            noted_at: e.noted_at,
        }
    }

    /// `answered`, `missed`, `rejected` or `live`.
    fn outcome(&self) -> &'static str {
        let answered = self.answered_at.is_some()
            || self.answered_extension.is_some()
            || matches!(
                self.reason.as_deref(),
                Some(r) if r == EndReason::Completed.label()
                    || r == EndReason::AnsweredElsewhere.label()
            );
        match self.reason.as_deref() {
            _ if answered => "answered",
            None => "live",
            Some(r) if r == EndReason::Rejected.label() => "rejected",
            Some(_) => "missed",
        }
    }

    fn to_json(&self, journal: Option<&Journal>, call_back: &str, fallback: Option<&str>) -> Value {
        let mut o = Map::new();
        o.insert("call_id".into(), json!(self.call_id));
        o.insert("started".into(), json!(rfc3339(self.started)));
        o.insert("extensions".into(), json!(self.extensions));
        let outcome = self.outcome();
        o.insert("outcome".into(), json!(outcome));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.into(), v);
            }
        };
        put("reason", self.reason.as_ref().map(|r| json!(r)));
        put(
            "answered_extension",
            self.answered_extension.as_ref().map(|e| json!(e)),
        );
        put("answered_by", self.answered_by.as_ref().map(|a| json!(a)));
        let name = self
            .answered_extension
            .as_deref()
            .zip(journal)
            .and_then(|(ext, j)| j.agents().by_extension(ext))
            .filter(|a| Some(&a.id) == self.answered_by.as_ref())
            .map(|a| a.name.clone());
        put("answered_by_name", name.map(|n| json!(n)));
        // Only a hang-up seen by an intake gives a true duration.
        if self.reason.as_deref() == Some(EndReason::Completed.label())
            && let (Some(a), Some(e)) = (self.answered_at, self.ended_at)
            && let Ok(d) = e.duration_since(a)
        {
            put("duration_s", Some(json!(d.as_secs())));
        }
        put("disposition", self.disposition.as_ref().map(|d| json!(d)));
        put("note", self.note.as_ref().map(|n| json!(n)));
        put("noted_by", self.noted_by.as_ref().map(|n| json!(n)));
        let number = self.number.as_deref().or(fallback);
        put(
            "call_back",
            number
                .and_then(|n| call_back_link(call_back, n))
                .map(|l| json!(l)),
        );
        Value::Object(o)
    }
}

/// The call log's calls into the journal's: a call in both keeps the journal's entry (this
/// node's live view), with the call log's note when that is newer (written at another node,
/// or before this node started); the others are added.
fn merge(items: &mut Vec<Item>, logged: Vec<Item>) {
    for row in logged {
        match items.iter_mut().find(|i| i.call_id == row.call_id) {
            Some(mine) => {
                let newer = match (row.noted_at, mine.noted_at) {
                    (Some(theirs), Some(ours)) => theirs > ours,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if newer {
                    mine.note = row.note;
                    mine.disposition = row.disposition;
                    mine.noted_by = row.noted_by;
                    mine.noted_at = row.noted_at;
                }
            }
            None => items.push(row),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The call-back link for `number` from a template such as `tel:{number}` or
/// `sip:{number}@pbx.example.com`: the number as dialled digits (`+` and `0-9*#` kept, the
/// rest dropped, so nothing in it can break out of the URI). `None` when no digit is left.
pub fn call_back_link(template: &str, number: &str) -> Option<String> {
    dialable(number).map(|dialled| template.replace("{number}", &dialled))
}

/// `number` reduced to what can be dialled: digits, `*`, `#` and a leading `+`; `None` when
/// no digit is left. The one rule for call-back links and for dialling through the PBX.
pub fn dialable(number: &str) -> Option<String> {
    let dialled: String = number
        .chars()
        .enumerate()
        .filter(|&(i, c)| c.is_ascii_digit() || c == '*' || c == '#' || (c == '+' && i == 0))
        .map(|(_, c)| c)
        .collect();
    dialled
        .chars()
        .any(|c| c.is_ascii_digit())
        .then_some(dialled)
}

const LOGGED: &str = "SELECT call_id, ringing_extensions, answered_extension, answered_by,
            started_at, answered_at, ended_at, outcome, disposition, notes, noted_by,
            CASE WHEN withheld THEN NULL ELSE caller_number END, noted_at
     FROM call_log
     WHERE customer_id = $1 AND call_id <> ALL($2)
     ORDER BY started_at DESC
     LIMIT $3";

const COUNTED: &str = "SELECT count(*) FILTER (WHERE started_at >= $3), count(*)
     FROM call_log
     WHERE customer_id = $1 AND call_id <> ALL($2) AND started_at >= $4";

/// What the call log says: its newest calls other than `except_listed` (the journal's copies
/// are merged by the caller: a note saved at another node is only here), and the counts of
/// calls other than `except_counted` (those the journal counted).
async fn logged(
    db: &Database,
    customer_id: &str,
    except_listed: &[String],
    except_counted: &[String],
    limit: usize,
    windows: [SystemTime; 2],
) -> Result<(Vec<Item>, [usize; 2]), String> {
    let client = db.pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Timeout(_) => "no connection in time".to_owned(),
        other => other.to_string(),
    })?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (list, counts) = tokio::join!(
        async {
            let st = client.prepare_cached(LOGGED).await?;
            client
                .query(&st, &[&customer_id, &except_listed, &limit])
                .await
        },
        async {
            let st = client.prepare_cached(COUNTED).await?;
            client
                .query_one(
                    &st,
                    &[&customer_id, &except_counted, &windows[0], &windows[1]],
                )
                .await
        },
    );
    let list = list.map_err(|e| e.to_string())?;
    let counts = counts.map_err(|e| e.to_string())?;
    let count = |i: usize| usize::try_from(counts.get::<_, i64>(i)).unwrap_or(0);
    let items = list
        .iter()
        .map(|r| Item {
            call_id: r.get(0),
            extensions: r.get(1),
            answered_extension: r.get(2),
            answered_by: r.get(3),
            started: r.get(4),
            answered_at: r.get(5),
            ended_at: r.get(6),
            // A row without an end: the daemon that logged it stopped first.
            reason: Some(
                r.get::<_, Option<String>>(7)
                    .unwrap_or_else(|| EndReason::Expired.label().to_owned()),
            ),
            disposition: r.get(8),
            note: r.get(9),
            noted_by: r.get(10),
            number: r.get(11),
            noted_at: r.get(12),
        })
        .collect();
    Ok((items, [count(0), count(1)]))
}

impl Source for History {
    async fn fetch(&self, who: &Who) -> Result<Section, SourceError> {
        let customer_id = who.customer.id();
        let now = SystemTime::now();
        let windows = [
            now - Duration::from_secs(24 * 3600),
            now - Duration::from_secs(7 * 24 * 3600),
        ];
        let journal = self.store.journal.get().map(Arc::as_ref);
        let local = journal
            .map(|j| {
                // The ids only exclude the call log's copies of these calls.
                let ids = self.store.database.is_some();
                j.for_customer(
                    customer_id,
                    who.call_id.as_deref(),
                    self.limit,
                    windows,
                    ids,
                )
            })
            .unwrap_or_default();
        let mut items: Vec<Item> = local.newest.into_iter().map(Item::from_entry).collect();
        let mut counts = local.counts;
        let mut partial = false;
        if let Some(db) = &self.store.database {
            if !db.paused() {
                let mut counted = local.ids;
                counted.extend(who.call_id.clone());
                let listed: Vec<String> = who.call_id.iter().cloned().collect();
                let asked = tokio::time::timeout(
                    self.database_timeout,
                    logged(db, customer_id, &listed, &counted, self.limit, windows),
                )
                .await;
                match asked {
                    Ok(Ok((logged_items, logged_counts))) => {
                        merge(&mut items, logged_items);
                        for (c, l) in counts.iter_mut().zip(logged_counts) {
                            *c += l;
                        }
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e,
                            _ => "timed out".to_owned(),
                        };
                        tracing::warn!(
                            error = %why,
                            pause = ?DATABASE_PAUSE,
                            "History: the call log is unavailable; showing this node's calls only."
                        );
                        db.pause();
                        partial = true;
                    }
                }
            } else {
                partial = true;
            }
        }
        items.sort_by_key(|i| std::cmp::Reverse(i.started));
        items.truncate(self.limit);
        let fallback = who.numbers.first().map(String::as_str);
        let calls: Vec<Value> = items
            .iter()
            .map(|i| i.to_json(journal, &self.call_back, fallback))
            .collect();
        let mut section = json!({
            "calls": calls,
            "calls_24h": counts[0],
            "calls_7d": counts[1],
            "repeat": counts[0] > 0,
        });
        if partial {
            section["partial"] = json!(true);
        }
        Ok(section)
    }
}

/// When a customer was last in contact: their newest call before the one ringing now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastContact {
    /// When that call started (RFC 3339, milliseconds).
    pub at: String,
    /// `answered`, `missed`, `rejected` or `live`.
    pub outcome: &'static str,
}

/// What the history says of each candidate of a call: when each was last in contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastContacts {
    /// Per candidate, in the order asked: its id and last contact, if it ever had one.
    pub contacts: Vec<(String, Option<LastContact>)>,
    /// The call log could not be read in time: only this node's journal was asked.
    pub partial: bool,
}

/// The history seen from a ringing call with several candidates: one glance per candidate,
/// so that the agent can tell them apart by when each last called. Follows `[history]`: off
/// when it is off, shown only to the roles that may see the section.
#[derive(Debug, Clone)]
pub struct Glance {
    store: Arc<Store>,
    roles: Vec<String>,
    database_timeout: Duration,
    /// Bounds the call-log queries in flight: past it, a glance is the journal's, `partial`.
    asking: Arc<tokio::sync::Semaphore>,
}

/// Most glances asking the call log at once.
const MAX_GLANCES_ASKING: usize = 64;

/// Most candidates a glance asks about (a number shared by more customers than this is a
/// switchboard, and the page lists only so many).
pub const MAX_GLANCE: usize = 20;

const LAST_LOGGED: &str =
    "SELECT c.id, l.started_at, l.answered_extension, l.answered_at, l.outcome
     FROM unnest($1::text[]) AS c(id)
     CROSS JOIN LATERAL (
         SELECT started_at, answered_extension, answered_at, outcome
         FROM call_log
         WHERE customer_id = c.id AND call_id <> ALL($2)
         ORDER BY started_at DESC
         LIMIT 1) AS l";

impl Glance {
    /// The glance `config` asks for over `store`; `None` when the history is off.
    pub fn new(store: Arc<Store>, config: &HistoryConfig) -> Option<Glance> {
        config.enabled.then(|| Glance {
            store,
            roles: config.roles.clone(),
            database_timeout: config.database_timeout,
            asking: Arc::new(tokio::sync::Semaphore::new(MAX_GLANCES_ASKING)),
        })
    }

    /// Whether an agent with `roles` may see it (the `history` section's own rule).
    pub fn allowed(&self, roles: &[String]) -> bool {
        self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(r))
    }

    /// The last contact of each of `customers` (at most [`MAX_GLANCE`]) other than the call
    /// `except`: the journal's newest call, or the call log's when that is newer. A slow or
    /// dead call log, or more than [`MAX_GLANCES_ASKING`] glances asking it at once, gives the
    /// journal's alone, `partial`.
    pub async fn last_contacts(&self, customers: &[&str], except: &str) -> LastContacts {
        let customers = &customers[..customers.len().min(MAX_GLANCE)];
        let journal = self.store.journal.get();
        let mut newest: Vec<Option<Item>> = customers
            .iter()
            .map(|id| {
                let calls =
                    journal?.for_customer(id, Some(except), 1, [SystemTime::now(); 2], false);
                calls.newest.into_iter().next().map(Item::from_entry)
            })
            .collect();
        let mut partial = false;
        if let Some(db) = &self.store.database {
            let permit = self.asking.try_acquire();
            if db.paused() || permit.is_err() {
                partial = true;
            } else {
                let asked =
                    tokio::time::timeout(self.database_timeout, last_logged(db, customers, except))
                        .await;
                match asked {
                    Ok(Ok(logged)) => {
                        for (customer, item) in logged {
                            let Some(at) = customers.iter().position(|c| **c == customer) else {
                                continue;
                            };
                            let slot = &mut newest[at];
                            if slot.as_ref().is_none_or(|i| i.started < item.started) {
                                *slot = Some(item);
                            }
                        }
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e,
                            _ => "timed out".to_owned(),
                        };
                        tracing::warn!(
                            error = %why,
                            pause = ?DATABASE_PAUSE,
                            "History: the call log is unavailable; candidates' last contacts from this node's calls only."
                        );
                        db.pause();
                        partial = true;
                    }
                }
            }
        }
        let contacts = customers
            .iter()
            .zip(newest)
            .map(|(id, item)| {
                let contact = item.map(|i| LastContact {
                    at: rfc3339(i.started),
                    outcome: i.outcome(),
                });
                ((*id).to_owned(), contact)
            })
            .collect();
        LastContacts { contacts, partial }
    }
}

/// The call log's newest call of each customer that has one, other than `except`, with the
/// customer's id (all a glance needs of a call is when it started and how it ended).
async fn last_logged(
    db: &Database,
    customers: &[&str],
    except: &str,
) -> Result<Vec<(String, Item)>, String> {
    let client = db.pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Timeout(_) => "no connection in time".to_owned(),
        other => other.to_string(),
    })?;
    let st = client
        .prepare_cached(LAST_LOGGED)
        .await
        .map_err(|e| e.to_string())?;
    let except = [except];
    let rows = client
        .query(&st, &[&customers, &&except[..]])
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| {
            let item = Item {
                call_id: String::new(),
                started: r.get(1),
                extensions: Vec::new(),
                answered_extension: r.get(2),
                answered_by: None,
                answered_at: r.get(3),
                ended_at: None,
                reason: Some(
                    r.get::<_, Option<String>>(4)
                        .unwrap_or_else(|| EndReason::Expired.label().to_owned()),
                ),
                disposition: None,
                note: None,
                noted_by: None,
                noted_at: None,
                number: None,
            };
            (r.get(0), item)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_back_links_keep_only_what_can_be_dialled() {
        assert_eq!(
            call_back_link("tel:{number}", "+1 (415) 555-0102").as_deref(),
            Some("tel:+14155550102")
        );
        assert_eq!(
            call_back_link("sip:{number}@pbx.example.com", "0049 30 1234\"><x>").as_deref(),
            Some("sip:0049301234@pbx.example.com")
        );
        assert_eq!(call_back_link("tel:{number}", "anonymous"), None);
        assert_eq!(
            call_back_link("tel:{number}", "12+34").as_deref(),
            Some("tel:1234")
        );
    }

    fn item(reason: Option<&str>, answered: bool) -> Item {
        Item {
            call_id: "c".into(),
            started: SystemTime::UNIX_EPOCH,
            extensions: vec!["1001".into()],
            answered_extension: None,
            answered_by: None,
            answered_at: answered.then_some(SystemTime::UNIX_EPOCH),
            ended_at: None,
            reason: reason.map(str::to_owned),
            disposition: None,
            note: None,
            noted_by: None,
            noted_at: None,
            number: None,
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(item(None, false).outcome(), "live");
        assert_eq!(item(None, true).outcome(), "answered");
        assert_eq!(item(Some("completed"), true).outcome(), "answered");
        assert_eq!(
            item(Some("answered_elsewhere"), false).outcome(),
            "answered"
        );
        assert_eq!(item(Some("cancelled"), false).outcome(), "missed");
        assert_eq!(item(Some("timeout"), false).outcome(), "missed");
        assert_eq!(item(Some("rejected"), false).outcome(), "rejected");
    }

    #[test]
    fn a_duration_only_for_a_seen_hang_up() {
        let mut done = item(Some("completed"), true);
        done.ended_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(95));
        let v = done.to_json(None, "tel:{number}", None);
        assert_eq!(v["duration_s"], 95);
        let mut elsewhere = done;
        elsewhere.reason = Some("answered_elsewhere".into());
        let v = elsewhere.to_json(None, "tel:{number}", Some("+14155550102"));
        assert!(v.get("duration_s").is_none());
        assert_eq!(v["call_back"], "tel:+14155550102");
    }
}
