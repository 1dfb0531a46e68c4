//! The call log's local spool: an append-only log on disk in front of PostgreSQL, so that what
//! the daemon acknowledged (a pop's call row, a note answered 200, a pick answered `picked`)
//! survives SIGTERM, SIGKILL, a crash and a long database outage.
//!
//! The spool is a directory of numbered segment files (`0000000000000001.spool`, …) and a lock
//! file. Each record is framed as `length (u32 LE) · CRC-32 (u32 LE) · payload`; the payload
//! is opaque here (the call log stores JSON). One thread owns the files: it takes what is
//! queued, writes it in one `write`, calls `fdatasync` once for the whole group (group commit)
//! and then acknowledges every record of the group. Callers that must not answer before the
//! record is on disk wait for that acknowledgement ([`Spool::append`]); the call path only
//! queues ([`Spool::enqueue`]) and never waits.
//!
//! Segments are deleted when everything in them is in PostgreSQL: the call log asks for a
//! rotation (new records go to a new segment) and then releases the segments older than the
//! oldest record it still holds ([`Spool::rotate`], [`Spool::release`]). At start, every
//! segment is read back ([`Spool::open`]) — a torn record at the end of a segment (a crash
//! mid-write) ends that segment's replay and is counted — and its records are written again.
//! The spool is bounded by `max_bytes`: beyond it, new records are refused and counted
//! (`screenpop_spool_refused_total`), never silently lost.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

/// Records waiting for the spool thread; beyond it [`Spool::enqueue`] refuses (counted).
pub const QUEUE: usize = 65_536;
/// Most records written per group commit.
const GROUP: usize = 4_096;
/// A segment is closed and a new one started when it grows past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record accepted (a call row or a note is a few hundred bytes).
pub const MAX_RECORD: usize = 1 << 20;
const HEADER: usize = 8;
const LOCK_FILE: &str = "lock";
const EXTENSION: &str = "spool";

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory could not be created, opened or locked.
    #[error("spool directory {path}: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the spool.
    #[error(
        "spool directory {0} is in use by another screenpop process (each daemon needs its own `[call_log] spool_dir`)"
    )]
    Locked(PathBuf),
    /// Writing or syncing failed (disk full, I/O error).
    #[error("spool write failed: {0}")]
    Write(String),
    /// The spool is at `max_bytes`, or its queue is full.
    #[error("spool full ({0})")]
    Full(&'static str),
    /// The spool thread has stopped.
    #[error("spool closed")]
    Closed,
}

/// One record read back at start: the segment it was in and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Its segment.
    pub segment: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

enum Op {
    Append(Vec<u8>, Option<oneshot::Sender<Result<(), SpoolError>>>),
    Rotate(oneshot::Sender<u64>),
    Release(u64),
    Sync(oneshot::Sender<Result<(), SpoolError>>),
}

/// The spool: a handle on the thread that owns the files.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    ops: mpsc::Sender<Op>,
    current: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    max_bytes: u64,
}

impl Spool {
    /// Opens (creating it if needed) and locks the spool in `dir`, reads back every record
    /// left there, oldest first, and starts the spool thread.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Vec<Replayed>), SpoolError> {
        let open_err = |source| SpoolError::Open {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(open_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let segments = segments(dir).map_err(open_err)?;
        let mut replayed = Vec::new();
        let mut bytes = 0;
        for &(segment, ref path) in &segments {
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(open_err)?;
            bytes += data.len() as u64;
            let (records, torn) = decode(&data);
            if torn > 0 {
                metrics::counter!(crate::calls::SPOOL_TORN_RECORDS_TOTAL).increment(1);
                tracing::warn!(
                    segment = %path.display(),
                    bytes = torn,
                    "Spool segment ends in a torn record (a crash mid-write); the rest of it is replayed."
                );
            }
            replayed.extend(records.into_iter().map(|payload| Replayed {
                segment,
                payload: payload.to_vec(),
            }));
        }
        let first = segments.last().map_or(1, |(n, _)| n + 1);
        let current = Arc::new(AtomicU64::new(first));
        let bytes = Arc::new(AtomicU64::new(bytes));
        let (ops, rx) = mpsc::channel(QUEUE);
        let mut writer = Writer {
            dir: dir.to_owned(),
            _lock: lock,
            file: None,
            segment: first,
            segment_bytes: 0,
            closed: segments.into_iter().collect(),
            current: current.clone(),
            bytes: bytes.clone(),
        };
        std::thread::Builder::new()
            .name("spool".into())
            .spawn(move || writer.run(rx))
            .map_err(open_err)?;
        metrics::gauge!(crate::calls::SPOOL_BYTES).set(bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!(crate::calls::SPOOL_MAX_BYTES).set(max_bytes as f64);
        Ok((
            Spool {
                dir: dir.to_owned(),
                ops,
                current,
                bytes,
                max_bytes,
            },
            replayed,
        ))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment new records go to now; a record queued now lands in this segment or a later
    /// one, never an earlier one.
    pub fn segment(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn admit(&self, payload: &[u8]) -> Result<(), SpoolError> {
        if payload.len() > MAX_RECORD {
            return Err(SpoolError::Full("record too large"));
        }
        if self.bytes() + (payload.len() + HEADER) as u64 > self.max_bytes {
            return Err(refused("max_bytes"));
        }
        Ok(())
    }

    /// Queues a record without waiting (never blocks: a full queue refuses), to be acknowledged
    /// on `ack` once on disk.
    fn queue(
        &self,
        payload: Vec<u8>,
        ack: Option<oneshot::Sender<Result<(), SpoolError>>>,
    ) -> Result<(), SpoolError> {
        self.admit(&payload)?;
        self.ops
            .try_send(Op::Append(payload, ack))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => refused("queue"),
                mpsc::error::TrySendError::Closed(_) => SpoolError::Closed,
            })
    }

    /// Queues a record without waiting (the call path): it is on disk within one group commit.
    pub fn enqueue(&self, payload: Vec<u8>) -> Result<(), SpoolError> {
        self.queue(payload, None)
    }

    /// Queues a record without waiting; the receiver answers once it is on disk (fsynced).
    pub fn submit(
        &self,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), SpoolError>>, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.queue(payload, Some(tx))?;
        Ok(rx)
    }

    /// Starts a new segment (when the current one holds anything) after every record queued
    /// so far, and returns its number: every record queued before the call is in an earlier
    /// segment.
    pub async fn rotate(&self) -> Result<u64, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Rotate(tx))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)
    }

    /// Deletes the closed segments numbered below `before` (their records are in PostgreSQL).
    pub async fn release(&self, before: u64) {
        let _ = self.ops.send(Op::Release(before)).await;
    }

    /// Waits until everything queued so far is on disk.
    pub async fn sync(&self) -> Result<(), SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Sync(tx))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }
}

fn refused(why: &'static str) -> SpoolError {
    metrics::counter!(crate::calls::SPOOL_REFUSED_TOTAL, "reason" => why).increment(1);
    SpoolError::Full(why)
}

/// The segment files in `dir`, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        if let Some(n) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found)
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.{EXTENSION}"))
}

/// Frames one record.
fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The whole records in `data`, and how many bytes at the end are not one (torn or corrupt).
fn decode(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Some(header) = data.get(at..at + HEADER) else {
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = data.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if len > MAX_RECORD || crc32fast::hash(payload) != crc {
            break;
        }
        records.push(payload);
        at += HEADER + len;
    }
    (records, data.len() - at)
}

struct Writer {
    dir: PathBuf,
    _lock: File,
    file: Option<File>,
    segment: u64,
    segment_bytes: u64,
    /// Closed segments still on disk, with their numbers.
    closed: std::collections::BTreeMap<u64, PathBuf>,
    current: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Writer {
    fn run(&mut self, mut ops: mpsc::Receiver<Op>) {
        let mut buf = Vec::new();
        let mut waiting = Vec::new();
        while let Some(op) = ops.blocking_recv() {
            let mut next = Some(op);
            let mut taken = 0;
            // Gather what is queued into one group: one write, one fsync.
            while let Some(op) = next.take() {
                match op {
                    Op::Append(payload, ack) => {
                        encode(&payload, &mut buf);
                        waiting.extend(ack);
                        taken += 1;
                    }
                    Op::Sync(ack) => waiting.push(ack),
                    other => {
                        self.commit(&mut buf, &mut waiting);
                        self.control(other);
                    }
                }
                if taken < GROUP {
                    next = ops.try_recv().ok();
                }
            }
            self.commit(&mut buf, &mut waiting);
        }
        // Every handle is gone: what was queued is written; the segments stay for next start.
        self.commit(&mut buf, &mut waiting);
    }

    fn control(&mut self, op: Op) {
        match op {
            Op::Rotate(ack) => {
                if self.segment_bytes > 0 {
                    self.close_segment();
                }
                let _ = ack.send(self.segment);
            }
            Op::Release(before) => {
                let done: Vec<u64> = self.closed.range(..before).map(|(n, _)| *n).collect();
                for n in done {
                    if let Some(path) = self.closed.remove(&n) {
                        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                        match std::fs::remove_file(&path) {
                            Ok(()) => {
                                self.bytes.fetch_sub(size, Ordering::Relaxed);
                            }
                            Err(error) => {
                                tracing::warn!(%error, segment = %path.display(), "Spool segment not deleted.");
                            }
                        }
                    }
                }
                metrics::gauge!(crate::calls::SPOOL_BYTES)
                    .set(self.bytes.load(Ordering::Relaxed) as f64);
            }
            Op::Append(..) | Op::Sync(_) => {}
        }
    }

    fn close_segment(&mut self) {
        self.file = None;
        self.closed
            .insert(self.segment, segment_path(&self.dir, self.segment));
        self.segment += 1;
        self.segment_bytes = 0;
        self.current.store(self.segment, Ordering::Release);
    }

    /// Writes and syncs `buf`, then answers every waiter.
    fn commit(
        &mut self,
        buf: &mut Vec<u8>,
        waiting: &mut Vec<oneshot::Sender<Result<(), SpoolError>>>,
    ) {
        if buf.is_empty() && waiting.is_empty() {
            return;
        }
        let result = if buf.is_empty() {
            Ok(())
        } else {
            self.write(buf)
        };
        match &result {
            Ok(()) => {
                let n = buf.len() as u64;
                self.segment_bytes += n;
                self.bytes.fetch_add(n, Ordering::Relaxed);
                metrics::counter!(crate::calls::SPOOL_WRITTEN_BYTES_TOTAL).increment(n);
                metrics::gauge!(crate::calls::SPOOL_BYTES)
                    .set(self.bytes.load(Ordering::Relaxed) as f64);
            }
            Err(error) => {
                metrics::counter!(crate::calls::SPOOL_WRITE_ERRORS_TOTAL).increment(1);
                tracing::error!(%error, "Spool write failed; the records stay in memory only.");
                // Start afresh: a partly written tail is cut at replay by its checksum.
                self.file = None;
            }
        }
        buf.clear();
        for ack in waiting.drain(..) {
            let _ = ack.send(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| SpoolError::Write(e.to_string())),
            );
        }
        if self.segment_bytes >= SEGMENT_BYTES {
            self.close_segment();
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            let path = segment_path(&self.dir, self.segment);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            // The new name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            self.segment_bytes = file.metadata()?.len();
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("no segment open"));
        };
        file.write_all(buf)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a record and waits until it is on disk.
    async fn durable(spool: &Spool, payload: &[u8]) -> Result<(), SpoolError> {
        spool
            .submit(payload.to_vec())?
            .await
            .map_err(|_| SpoolError::Closed)?
    }

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "screenpop-spool-unit-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut() {
        let mut data = Vec::new();
        encode(b"one", &mut data);
        encode(b"two", &mut data);
        let whole = data.len();
        encode(b"three", &mut data);
        data.truncate(whole + 6);
        let (records, torn) = decode(&data);
        assert_eq!(records, vec![&b"one"[..], &b"two"[..]]);
        assert_eq!(torn, 6);
        // A flipped bit ends the replay at that record.
        let mut bad = Vec::new();
        encode(b"good", &mut bad);
        let at = bad.len();
        encode(b"evil", &mut bad);
        bad[at + HEADER] ^= 1;
        assert_eq!(decode(&bad).0, vec![&b"good"[..]]);
    }

    #[tokio::test]
    async fn records_survive_reopening_and_released_segments_are_gone() {
        let dir = temp();
        let (spool, replayed) = Spool::open(&dir, 1 << 20).expect("open");
        assert!(replayed.is_empty());
        durable(&spool, b"a").await.expect("a");
        let next = spool.rotate().await.expect("rotate");
        spool.enqueue(b"b".to_vec()).expect("b");
        spool.sync().await.expect("sync");
        assert!(
            matches!(Spool::open(&dir, 1 << 20), Err(SpoolError::Locked(_))),
            "a second process is refused"
        );
        drop(spool);
        // The thread lets go of the lock once its queue is drained.
        let (spool, replayed) = loop {
            match Spool::open(&dir, 1 << 20) {
                Ok(open) => break open,
                Err(SpoolError::Locked(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let got: Vec<(u64, &[u8])> = replayed
            .iter()
            .map(|r| (r.segment, r.payload.as_slice()))
            .collect();
        assert_eq!(got, vec![(next - 1, &b"a"[..]), (next, &b"b"[..])]);
        assert!(
            spool.segment() > next,
            "new records go after the replayed ones"
        );
        spool.release(spool.segment()).await;
        spool.sync().await.expect("sync");
        assert_eq!(spool.bytes(), 0);
        assert!(segments(&dir).expect("list").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_says_so() {
        let dir = temp();
        let (spool, _) = Spool::open(&dir, 64).expect("open");
        durable(&spool, &[b'x'; 40]).await.expect("fits");
        assert!(matches!(
            durable(&spool, &[b'y'; 40]).await,
            Err(SpoolError::Full("max_bytes"))
        ));
        assert!(spool.enqueue(vec![b'y'; 40]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
