//! The call log in PostgreSQL: one row per call (`call_log`), the agents' candidate picks
//! (`customer_picks`) and their notes and dispositions (`call_log.notes`, …), written
//! asynchronously and in batches, never in a pop's way.
//!
//! Everything goes through one durable path: each call update, pick and note is appended to
//! the local spool ([`super::spool`]) and folded into a buffer of pending rows, one per call
//! (later updates of a call replace its row; they carry the whole call). A pick or a note is
//! acknowledged to the agent only once it is on disk ([`Ack`]); a call row is on disk within
//! one group commit of its pop. A writer takes up to `batch` rows every `flush_interval` (or
//! as soon as a batch is full) and upserts them in one transaction; once PostgreSQL has them,
//! the spool segments that held them are deleted. When PostgreSQL is unreachable the rows stay
//! in the buffer and in the spool, the writer reconnects with backoff, and they are written
//! when it is back — or at the next start, which replays the spool, after a crash or a
//! shutdown that could not reach the database. A new call that finds the buffer full is
//! counted as dropped (`screenpop_call_log_rows_total{result="dropped"}`), never silently
//! lost. On shutdown the calls still live end as `shutdown`, and the writer makes one last
//! attempt, bounded by [`FINAL_FLUSH`], and logs what it wrote and what it left in the spool.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::EndReason;
use super::spool::{Spool, SpoolError};
use super::tracker::{CallState, CallUpdate, Change};
use crate::agents::Agents;
use crate::db::DbError;
use crate::resolve::Resolution;

/// How long shutdown waits for the last rows to be written.
pub const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Writer settings.
#[derive(Debug, Clone)]
pub struct CallLogSettings {
    /// The database.
    pub database_url: String,
    /// Most calls waiting to be written (beyond: new calls are dropped and counted).
    pub buffer: usize,
    /// Most rows per transaction.
    pub batch: usize,
    /// How often pending rows are written.
    pub flush_interval: Duration,
    /// The spool directory (one per daemon).
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold on disk.
    pub spool_max_bytes: u64,
}

/// One `call_log` row as it will be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Row {
    caller_number: Option<String>,
    withheld: bool,
    customer_id: Option<String>,
    ringing_extensions: Vec<String>,
    answered_by: Option<String>,
    answered_extension: Option<String>,
    started_at: SystemTime,
    answered_at: Option<SystemTime>,
    ended_at: Option<SystemTime>,
    outcome: Option<EndReason>,
    /// The oldest spool segment holding an update of this row not yet in PostgreSQL.
    #[serde(skip)]
    segment: u64,
}

impl Row {
    /// Keeps what an older row knew and this one does not (a row put back after a failed
    /// write, under a newer one; an earlier update replayed from the spool).
    fn inherit(&mut self, older: &Row) {
        if self.customer_id.is_none() {
            self.customer_id.clone_from(&older.customer_id);
        }
        if self.answered_at.is_none() {
            self.answered_at = older.answered_at;
        }
        if self.ended_at.is_none() {
            self.ended_at = older.ended_at;
        }
        self.segment = self.segment.min(older.segment);
    }
}

/// An agent's note on a call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    note: Option<String>,
    disposition: Option<String>,
    agent: String,
    at: SystemTime,
    #[serde(skip)]
    segment: u64,
}

/// A pick to remember: `(agent, caller key)` → customer, and the call it was made on.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pick {
    caller_key: String,
    customer_id: String,
    call_id: String,
    at: SystemTime,
    #[serde(skip)]
    segment: u64,
}

/// What the spool holds: one update of the call log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Record {
    Call { id: String, row: Row },
    Pick { agent: String, pick: Pick },
    Note { call_id: String, note: Note },
}

impl Record {
    /// Tags the record with the spool segment it is in (or a no later one).
    fn set_segment(&mut self, segment: u64) {
        match self {
            Record::Call { row, .. } => row.segment = segment,
            Record::Pick { pick, .. } => pick.segment = segment,
            Record::Note { note, .. } => note.segment = segment,
        }
    }
}

#[derive(Default)]
struct Pending {
    calls: HashMap<String, Row>,
    /// By `(agent, call id)`: every pick updates its call; the latest of an agent for a
    /// caller key is the one remembered.
    picks: HashMap<(String, String), Pick>,
    /// By call id; the latest note of a call wins.
    notes: HashMap<String, Note>,
}

impl Pending {
    fn len(&self) -> usize {
        self.calls.len() + self.picks.len() + self.notes.len()
    }

    /// The oldest spool segment still needed.
    fn oldest_segment(&self) -> Option<u64> {
        let calls = self.calls.values().map(|r| r.segment);
        let picks = self.picks.values().map(|p| p.segment);
        let notes = self.notes.values().map(|n| n.segment);
        calls.chain(picks).chain(notes).min()
    }

    fn add_call(&mut self, id: &str, row: Row) {
        match self.calls.get_mut(id) {
            Some(older) => {
                let older = std::mem::replace(older, row);
                if let Some(newer) = self.calls.get_mut(id) {
                    newer.inherit(&older);
                }
            }
            None => {
                self.calls.insert(id.to_owned(), row);
            }
        }
    }

    fn add(&mut self, record: Record) {
        match record {
            Record::Call { id, row } => self.add_call(&id, row),
            Record::Pick { agent, pick } => {
                self.picks.insert((agent, pick.call_id.clone()), pick);
            }
            Record::Note { call_id, note } => {
                self.notes.insert(call_id, note);
            }
        }
    }
}

/// The acknowledgement of a pick or a note: resolves once it is on disk.
#[derive(Debug)]
#[must_use = "a pick or note is acknowledged only once it is durable"]
pub struct Ack(Result<oneshot::Receiver<Result<(), SpoolError>>, SpoolError>);

impl Ack {
    /// Waits until the record is on disk (or says why it is not).
    pub async fn durable(self) -> Result<(), SpoolError> {
        match self.0 {
            Ok(rx) => rx.await.map_err(|_| SpoolError::Closed)?,
            Err(error) => Err(error),
        }
    }
}

/// The call log: buffer, spool and counters, shared by the update consumer and the writer.
pub struct CallLog {
    settings: CallLogSettings,
    agents: Arc<Agents>,
    spool: Spool,
    pending: Mutex<Pending>,
    wake: Notify,
    written: AtomicU64,
    /// Calls, picks and notes written.
    written_items: AtomicU64,
    dropped: AtomicU64,
}

impl crate::calls::Observer for CallLog {
    fn observe(&self, update: &CallUpdate) {
        self.record(update);
    }
}

impl std::fmt::Debug for CallLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallLog")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl CallLog {
    /// A call log writing to `settings.database_url` through the spool in
    /// `settings.spool_dir`, with whatever an earlier run left in the spool pending;
    /// `agents` names who answered.
    pub fn open(
        settings: CallLogSettings,
        agents: Arc<Agents>,
    ) -> Result<Arc<CallLog>, SpoolError> {
        let (spool, replayed) = Spool::open(&settings.spool_dir, settings.spool_max_bytes)?;
        let mut pending = Pending::default();
        let (mut records, mut unreadable) = (0u64, 0u64);
        for r in replayed {
            match serde_json::from_slice::<Record>(&r.payload) {
                Ok(mut record) => {
                    record.set_segment(r.segment);
                    pending.add(record);
                    records += 1;
                }
                Err(_) => unreadable += 1,
            }
        }
        if records > 0 || unreadable > 0 {
            metrics::counter!(crate::calls::SPOOL_REPLAYED_RECORDS_TOTAL).increment(records);
            tracing::info!(
                records,
                unreadable,
                calls = pending.calls.len(),
                notes = pending.notes.len(),
                picks = pending.picks.len(),
                spool = %settings.spool_dir.display(),
                "Spool replayed; its rows are written to the call log."
            );
        }
        Ok(Arc::new(CallLog {
            settings,
            agents,
            spool,
            pending: Mutex::new(pending),
            wake: Notify::new(),
            written: AtomicU64::new(0),
            written_items: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Calls dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Calls waiting to be written.
    pub fn pending(&self) -> usize {
        self.lock().calls.len()
    }

    /// Calls, picks and notes waiting to be written.
    pub fn pending_all(&self) -> usize {
        self.lock().len()
    }

    /// Folds one call update into the buffer and queues it for the spool.
    pub fn record(&self, update: &CallUpdate) {
        let call = &update.call;
        let now = SystemTime::now();
        let answered_extension = match &call.state {
            CallState::Answered { by: Some(by) } => Some(by.clone()),
            _ => None,
        }
        .or_else(|| {
            call.legs
                .iter()
                .find(|l| {
                    matches!(
                        l.state,
                        super::LegState::Answered
                            | super::LegState::Ended(super::EndReason::Completed)
                    )
                })
                .map(|l| l.extension.clone())
        });
        let answered_at = call.answered_at;
        let (ended_at, outcome) = match &update.change {
            Change::Ended { reason } => (Some(now), Some(*reason)),
            _ => (None, None),
        };
        let row = Row {
            caller_number: call.caller_number.clone().or(call.withheld_number.clone()),
            withheld: call.withheld,
            customer_id: match &call.resolution {
                Resolution::Customer { customer } | Resolution::Approximate { customer, .. } => {
                    Some(customer.id().to_owned())
                }
                _ => None,
            },
            ringing_extensions: call.legs.iter().map(|l| l.extension.clone()).collect(),
            answered_by: answered_extension
                .as_deref()
                .and_then(|ext| self.agents.by_extension(ext))
                .map(|a| a.id.clone()),
            answered_extension,
            started_at: call.started,
            answered_at,
            ended_at,
            outcome,
            segment: 0,
        };
        let mut record = Record::Call {
            id: call.id.clone(),
            row,
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let mut pending = self.lock();
        if !pending.calls.contains_key(&call.id) && pending.calls.len() >= self.settings.buffer {
            drop(pending);
            // Counted once per call: its later updates find it missing too, but only a
            // new call (Ringing) is counted.
            if matches!(update.change, Change::Ringing { .. }) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::calls::CALL_LOG_ROWS_TOTAL, "result" => "dropped")
                    .increment(1);
            }
            return;
        }
        // Tagged and queued under the lock: the spool holds the updates of a call in the
        // order they were folded, each in a segment no earlier than its tag.
        record.set_segment(self.spool.segment());
        pending.add(record);
        // A refused record stays in memory (written while the daemon runs) and is counted.
        let _ = self.spool.enqueue(bytes);
        let size = pending.calls.len();
        drop(pending);
        metrics::gauge!(crate::calls::CALL_LOG_PENDING).set(size as f64);
        if size >= self.settings.batch {
            self.wake.notify_one();
        }
    }

    /// Submits one pick or note: on the spool's queue and in the buffer, or neither.
    fn submit(&self, record: Record, full: impl FnOnce(&Pending) -> bool) -> Ack {
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return Ack(Err(SpoolError::Write("unencodable record".into())));
        };
        let mut pending = self.lock();
        if full(&pending) {
            return Ack(Err(SpoolError::Full("buffer")));
        }
        // Read before queueing: the record lands in this segment or a later one.
        let segment = self.spool.segment();
        let ack = match self.spool.submit(bytes) {
            Ok(rx) => rx,
            Err(error) => return Ack(Err(error)),
        };
        let mut record = record;
        record.set_segment(segment);
        pending.add(record);
        drop(pending);
        self.wake.notify_one();
        Ack(Ok(ack))
    }

    /// Remembers that `agent` picked `customer_id` for callers with this key, on `call_id`.
    pub fn pick(&self, agent: &str, caller_key: &str, customer_id: &str, call_id: &str) -> Ack {
        let key = (agent.to_owned(), call_id.to_owned());
        let record = Record::Pick {
            agent: key.0.clone(),
            pick: Pick {
                caller_key: caller_key.to_owned(),
                customer_id: customer_id.to_owned(),
                call_id: call_id.to_owned(),
                at: SystemTime::now(),
                segment: 0,
            },
        };
        let buffer = self.settings.buffer;
        self.submit(record, |p| {
            p.picks.len() >= buffer && !p.picks.contains_key(&key)
        })
    }

    /// Records `agent`'s note and disposition on a call. Written after the call's row (in the
    /// same transaction when the row is still pending), so it lands on the row.
    pub fn note(
        &self,
        call_id: &str,
        agent: &str,
        note: Option<&str>,
        disposition: Option<&str>,
    ) -> Ack {
        let record = Record::Note {
            call_id: call_id.to_owned(),
            note: Note {
                note: note.map(str::to_owned),
                disposition: disposition.map(str::to_owned),
                agent: agent.to_owned(),
                at: SystemTime::now(),
                segment: 0,
            },
        };
        let buffer = self.settings.buffer;
        let ack = self.submit(record, |p| {
            p.notes.len() >= buffer && !p.notes.contains_key(call_id)
        });
        if ack.0.is_err() {
            metrics::counter!(crate::calls::CALL_LOG_ROWS_TOTAL, "result" => "note_refused")
                .increment(1);
        }
        ack
    }

    /// Writes pending rows until `stop` fires, then makes one last bounded attempt and says
    /// what it wrote and what it left in the spool. `stop` should fire once the call tracker
    /// has ended the calls still live, so that their last rows are in that attempt.
    pub async fn write(self: Arc<Self>, stop: CancellationToken) {
        let mut client: Option<Client> = None;
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
            }
            match self.flush(&mut client).await {
                Ok(()) => {
                    backoff.reset();
                    self.checkpoint().await;
                }
                Err(error) => {
                    client = None;
                    metrics::counter!(crate::calls::CALL_LOG_WRITE_ERRORS_TOTAL).increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, pending = self.pending_all(), retry_in = ?delay, "Call log not written; rows kept in the spool for later.");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.shutdown(client).await;
    }

    /// The last attempt: bounded by [`FINAL_FLUSH`]; whatever it cannot write stays in the
    /// spool for the next start.
    async fn shutdown(&self, mut client: Option<Client>) {
        let before = self.written_items.load(Ordering::Relaxed);
        let waiting = self.pending_all();
        let last = if waiting > 0 {
            tokio::time::timeout(FINAL_FLUSH, self.flush(&mut client)).await
        } else {
            Ok(Ok(()))
        };
        let written = self.written_items.load(Ordering::Relaxed) - before;
        let synced = self.spool.sync().await;
        let spool = self.spool.dir().display().to_string();
        match (last, synced) {
            (Ok(Ok(())), _) => {
                self.checkpoint().await;
                tracing::info!(written, left_in_spool = 0, "Call log flushed at shutdown.");
            }
            (last, synced) => {
                let left = (waiting as u64).saturating_sub(written);
                let why = match last {
                    Err(_) => "timed out".to_owned(),
                    Ok(Err(error)) => error.to_string(),
                    Ok(Ok(())) => String::new(),
                };
                match synced {
                    Ok(()) => tracing::warn!(
                        written,
                        left_in_spool = left,
                        %spool,
                        why,
                        "Call log not fully written at shutdown; the rest is in the spool and is written at the next start."
                    ),
                    Err(error) => tracing::error!(
                        written,
                        lost = left,
                        %error,
                        why,
                        "Call log not fully written at shutdown and the spool failed too."
                    ),
                }
            }
        }
    }

    /// Deletes the spool segments whose records are all in PostgreSQL.
    async fn checkpoint(&self) {
        if self.spool.bytes() == 0 {
            return;
        }
        let Ok(next) = self.spool.rotate().await else {
            return;
        };
        let oldest = self.lock().oldest_segment().unwrap_or(next);
        self.spool.release(oldest.min(next)).await;
    }

    /// Writes everything pending, batch by batch; stops at the first failure (the failed
    /// batch goes back into the buffer).
    async fn flush(&self, client: &mut Option<Client>) -> Result<(), DbError> {
        loop {
            let (calls, picks, notes) = {
                let mut pending = self.lock();
                if pending.len() == 0 {
                    return Ok(());
                }
                let keys: Vec<String> = pending
                    .calls
                    .keys()
                    .take(self.settings.batch)
                    .cloned()
                    .collect();
                let calls: Vec<(String, Row)> = keys
                    .into_iter()
                    .filter_map(|k| pending.calls.remove_entry(&k))
                    .collect();
                // A pick or a note waits for its call's row: taken once the row is in this
                // batch or already written (they update it).
                let ready: Vec<(String, String)> = pending
                    .picks
                    .iter()
                    .filter(|(_, p)| !pending.calls.contains_key(&p.call_id))
                    .map(|(k, _)| k.clone())
                    .collect();
                let picks: Vec<((String, String), Pick)> = ready
                    .into_iter()
                    .filter_map(|k| pending.picks.remove_entry(&k))
                    .collect();
                let ready: Vec<String> = pending
                    .notes
                    .keys()
                    .filter(|id| !pending.calls.contains_key(*id))
                    .cloned()
                    .collect();
                let notes: Vec<(String, Note)> = ready
                    .into_iter()
                    .filter_map(|id| pending.notes.remove_entry(&id))
                    .collect();
                if calls.is_empty() && picks.is_empty() && notes.is_empty() {
                    return Ok(());
                }
                (calls, picks, notes)
            };
            if client.as_ref().is_none_or(Client::is_closed) {
                *client = Some(
                    connect(&self.settings.database_url)
                        .await
                        .inspect_err(|_| {
                            self.put_back(calls.clone(), picks.clone(), notes.clone())
                        })?,
                );
            }
            let Some(db) = client.as_mut() else {
                self.put_back(calls, picks, notes);
                return Err(DbError::Lost);
            };
            if let Err(error) = write_batch(db, &calls, &picks, &notes).await {
                self.put_back(calls, picks, notes);
                return Err(error);
            }
            self.written
                .fetch_add(calls.len() as u64, Ordering::Relaxed);
            self.written_items.fetch_add(
                (calls.len() + picks.len() + notes.len()) as u64,
                Ordering::Relaxed,
            );
            metrics::counter!(crate::calls::CALL_LOG_ROWS_TOTAL, "result" => "written")
                .increment(calls.len() as u64);
            metrics::gauge!(crate::calls::CALL_LOG_PENDING).set(self.pending() as f64);
        }
    }

    fn put_back(
        &self,
        calls: Vec<(String, Row)>,
        picks: Vec<((String, String), Pick)>,
        notes: Vec<(String, Note)>,
    ) {
        let mut pending = self.lock();
        for (id, old) in calls {
            match pending.calls.get_mut(&id) {
                Some(newer) => newer.inherit(&old),
                None => {
                    pending.calls.insert(id, old);
                }
            }
        }
        for (key, pick) in picks {
            match pending.picks.get_mut(&key) {
                // The newer pick wins, but the older one's segment is still needed until
                // the newer is written.
                Some(newer) => newer.segment = newer.segment.min(pick.segment),
                None => {
                    pending.picks.insert(key, pick);
                }
            }
        }
        for (id, note) in notes {
            match pending.notes.get_mut(&id) {
                Some(newer) => newer.segment = newer.segment.min(note.segment),
                None => {
                    pending.notes.insert(id, note);
                }
            }
        }
    }
}

async fn connect(url: &str) -> Result<Client, DbError> {
    let (client, connection) = crate::db::listen::config(url)?
        .connect_timeout(Duration::from_secs(3))
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(DbError::Connect)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

const UPSERT_CALLS: &str = "
INSERT INTO call_log (call_id, caller_number, withheld, customer_id, ringing_extensions,
                      answered_by, answered_extension, started_at, answered_at, ended_at, outcome)
SELECT r.call_id, r.caller_number, r.withheld, r.customer_id, string_to_array(r.exts, E'\\x1f'),
       r.answered_by, r.answered_extension, r.started_at, r.answered_at, r.ended_at, r.outcome
FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[])
     AS r(call_id, caller_number, withheld, customer_id, exts, answered_by, answered_extension,
          started_at, answered_at, ended_at, outcome)
ON CONFLICT (call_id) DO UPDATE SET
    caller_number = EXCLUDED.caller_number,
    withheld = EXCLUDED.withheld,
    customer_id = COALESCE(EXCLUDED.customer_id, call_log.customer_id),
    ringing_extensions = ARRAY(
        SELECT e FROM unnest(call_log.ringing_extensions || EXCLUDED.ringing_extensions)
                      WITH ORDINALITY AS u(e, i)
        GROUP BY e ORDER BY min(i)),
    answered_by = COALESCE(EXCLUDED.answered_by, call_log.answered_by),
    answered_extension = COALESCE(EXCLUDED.answered_extension, call_log.answered_extension),
    started_at = LEAST(call_log.started_at, EXCLUDED.started_at),
    answered_at = LEAST(call_log.answered_at, EXCLUDED.answered_at),
    ended_at = CASE
        WHEN call_log.outcome IN ('shutdown', 'expired')
             AND EXCLUDED.outcome NOT IN ('shutdown', 'expired') THEN EXCLUDED.ended_at
        ELSE LEAST(call_log.ended_at, EXCLUDED.ended_at) END,
    outcome = CASE
        WHEN EXCLUDED.outcome IS NULL THEN call_log.outcome
        WHEN EXCLUDED.outcome IN ('shutdown', 'expired') AND call_log.outcome IS NOT NULL
            THEN call_log.outcome
        ELSE EXCLUDED.outcome END";

const UPSERT_PICKS: &str = "
INSERT INTO customer_picks (agent_id, caller_key, customer_id, picked_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
ON CONFLICT (agent_id, caller_key) DO UPDATE SET
    customer_id = EXCLUDED.customer_id, picked_at = EXCLUDED.picked_at
WHERE customer_picks.picked_at <= EXCLUDED.picked_at";

const PICKED_CALLS: &str = "
UPDATE call_log c SET customer_id = p.customer_id
FROM unnest($1::text[], $2::text[]) AS p(call_id, customer_id) WHERE c.call_id = p.call_id";

const NOTED_CALLS: &str = "
UPDATE call_log c SET notes = n.notes, disposition = n.disposition, noted_by = n.noted_by,
                      noted_at = n.noted_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
     AS n(call_id, notes, disposition, noted_by, noted_at)
WHERE c.call_id = n.call_id AND (c.noted_at IS NULL OR c.noted_at <= n.noted_at)";

/// One transaction: the calls, then the picks and what they say about their calls, then the
/// notes (after the rows they land on).
async fn write_batch(
    client: &mut Client,
    calls: &[(String, Row)],
    picks: &[((String, String), Pick)],
    notes: &[(String, Note)],
) -> Result<(), DbError> {
    let q = DbError::query;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a call-log batch"))?;
    if !calls.is_empty() {
        let col = |f: &dyn Fn(&Row) -> Option<String>| -> Vec<Option<String>> {
            calls.iter().map(|(_, r)| f(r)).collect()
        };
        let ids: Vec<&str> = calls.iter().map(|(id, _)| id.as_str()).collect();
        let withheld: Vec<bool> = calls.iter().map(|(_, r)| r.withheld).collect();
        let exts: Vec<String> = calls
            .iter()
            .map(|(_, r)| r.ringing_extensions.join("\u{1f}"))
            .collect();
        let started: Vec<SystemTime> = calls.iter().map(|(_, r)| r.started_at).collect();
        let answered_at: Vec<Option<SystemTime>> =
            calls.iter().map(|(_, r)| r.answered_at).collect();
        let ended_at: Vec<Option<SystemTime>> = calls.iter().map(|(_, r)| r.ended_at).collect();
        tx.execute(
            UPSERT_CALLS,
            &[
                &ids,
                &col(&|r| r.caller_number.clone()),
                &withheld,
                &col(&|r| r.customer_id.clone()),
                &exts,
                &col(&|r| r.answered_by.clone()),
                &col(&|r| r.answered_extension.clone()),
                &started,
                &answered_at,
                &ended_at,
                &col(&|r| r.outcome.map(|o| o.label().to_owned())),
            ],
        )
        .await
        .map_err(q("writing the call log"))?;
    }
    if !picks.is_empty() {
        // One row per statement target (PostgreSQL refuses to update a row twice in one
        // statement): the latest pick per agent and caller key, and per call.
        let mut remembered: HashMap<(&str, &str), &Pick> = HashMap::new();
        let mut by_call: HashMap<&str, &Pick> = HashMap::new();
        for ((agent, _), pick) in picks {
            let slot = remembered
                .entry((agent.as_str(), pick.caller_key.as_str()))
                .or_insert(pick);
            if pick.at > slot.at {
                *slot = pick;
            }
            let slot = by_call.entry(pick.call_id.as_str()).or_insert(pick);
            if pick.at > slot.at {
                *slot = pick;
            }
        }
        let agents: Vec<&str> = remembered.keys().map(|(a, _)| *a).collect();
        let keys: Vec<&str> = remembered.keys().map(|(_, k)| *k).collect();
        let customers: Vec<&str> = remembered
            .values()
            .map(|p| p.customer_id.as_str())
            .collect();
        let at: Vec<SystemTime> = remembered.values().map(|p| p.at).collect();
        tx.execute(UPSERT_PICKS, &[&agents, &keys, &customers, &at])
            .await
            .map_err(q("writing picks"))?;
        let call_ids: Vec<&str> = by_call.keys().copied().collect();
        let customers: Vec<&str> = by_call.values().map(|p| p.customer_id.as_str()).collect();
        tx.execute(PICKED_CALLS, &[&call_ids, &customers])
            .await
            .map_err(q("writing picks"))?;
    }
    if !notes.is_empty() {
        let ids: Vec<&str> = notes.iter().map(|(id, _)| id.as_str()).collect();
        let texts: Vec<Option<&str>> = notes.iter().map(|(_, n)| n.note.as_deref()).collect();
        let dispositions: Vec<Option<&str>> = notes
            .iter()
            .map(|(_, n)| n.disposition.as_deref())
            .collect();
        let agents: Vec<&str> = notes.iter().map(|(_, n)| n.agent.as_str()).collect();
        let at: Vec<SystemTime> = notes.iter().map(|(_, n)| n.at).collect();
        tx.execute(NOTED_CALLS, &[&ids, &texts, &dispositions, &agents, &at])
            .await
            .map_err(q("writing notes"))?;
    }
    tx.commit().await.map_err(q("committing a call-log batch"))
}

/// The most recent picks, for the push hub to rank candidates by at start-up.
pub async fn load_picks(
    client: &Client,
    limit: i64,
) -> Result<Vec<(String, String, String)>, DbError> {
    let rows = client
        .query(
            "SELECT agent_id, caller_key, customer_id FROM customer_picks
             ORDER BY picked_at DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(DbError::query("loading picks"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// The most recent `limit` calls in `call_log`, oldest first, as journal entries: what the
/// agent page's "recent calls" shows after a restart. The customer is as logged (matched or
/// picked) with its name and company when it is still in `customers`; candidates that were
/// never picked are not logged, so such calls read `unknown`. A call without an end (the
/// daemon stopped first) reads ended, `expired`.
pub async fn load_journal(
    client: &Client,
    limit: i64,
) -> Result<Vec<super::journal::Entry>, DbError> {
    let rows = client
        .query(
            "SELECT l.call_id, l.caller_number, l.withheld, l.customer_id, c.name, c.company,
                    c.account_number, l.ringing_extensions, l.answered_by, l.answered_extension,
                    l.started_at, l.answered_at, l.ended_at, l.outcome, l.notes,
                    l.disposition, l.noted_by, l.noted_at
             FROM (SELECT * FROM call_log ORDER BY started_at DESC LIMIT $1) l
             LEFT JOIN customers c ON c.id = l.customer_id
             ORDER BY l.started_at",
            &[&limit],
        )
        .await
        .map_err(DbError::query("loading recent calls"))?;
    let outcome = |o: Option<String>| -> &'static str {
        EndReason::ALL
            .into_iter()
            .map(|r| r.label())
            .find(|l| o.as_deref() == Some(*l))
            .unwrap_or("expired")
    };
    Ok(rows
        .iter()
        .map(|r| {
            let customer_id: Option<String> = r.get(3);
            let withheld: bool = r.get(2);
            let customer = customer_id.map(|id| {
                let text = |i: usize| r.get::<_, Option<String>>(i).unwrap_or_default();
                let name = r.get::<_, Option<String>>(4).unwrap_or_else(|| id.clone());
                crate::resolve::Customer::new(crate::resolve::CustomerFields {
                    id: &id,
                    name: &name,
                    company: &text(5),
                    account: &text(6),
                    ..Default::default()
                })
            });
            super::journal::Entry {
                call_id: r.get(0),
                caller_number: r.get(1),
                caller_display: None,
                withheld,
                matched: if customer.is_some() {
                    "customer"
                } else if withheld {
                    "withheld"
                } else {
                    "unknown"
                },
                customer,
                candidates: 0,
                extensions: r.get(7),
                state: "ended",
                answered_extension: r.get(9),
                answered_by: r.get(8),
                started: r.get(10),
                answered_at: r.get(11),
                ended_at: r.get(12),
                outcome: Some(outcome(r.get(13))),
                note: r.get(14),
                disposition: r.get(15),
                noted_by: r.get(16),
                noted_at: r.get(17),
            }
        })
        .collect())
}
