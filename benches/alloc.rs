//! Heap allocations on the call path (issue 19), counted by a global allocator around
//! `std::alloc::System`.
//!
//! The daemon's call path for a SIP fork-target call is built in process, wired as
//! `daemon::Daemon::start` wires it and with the daemon's defaults (`daemon::settings_base` of a
//! minimal config): the `Endpoint` reporting into the call-event channel
//! (`CALL_EVENT_QUEUE`), the call tracker (`Calls`) resolving against an index of a handful
//! of the demo's customers, its in-line observers in the daemon's order (the journal, the
//! callbacks, the push `Hub`), and one agent registered on the hub like a WebSocket session,
//! with its bounded queue of `Outbound`. The Prometheus recorder is installed as the daemon
//! installs it. Left out: the socket reads (the bench calls `Endpoint::handle` with the
//! datagram), the WebSocket write of the rendered frame, logging (unless `--log`), the
//! transaction and call-expiry timers (they run on their own tasks, later), profile
//! composition (no sources, `[history] enabled = false`), the call log and the cluster.
//!
//! Each call, as a PBX forking to screenpop sends it (`benches/load/loadgen.rs`): the real
//! carrier INVITE of `tests/corpus/pbx/carrier-pai-tel.sip`, its Request-URI the agent's
//! extension and its Call-ID, branch and From tag made unique, the caller one of the
//! customers in turn; then its CANCEL (`Reason: SIP;cause=200`: answered elsewhere) and the ACK
//! of the 487. Replies go to a real loopback UDP socket (the "PBX"), read outside the counts.
//! Stages, counted one by one on this thread:
//!
//! ```text
//!  INVITE ─▶ Endpoint::handle ─▶ 100 Trying (UDP)              `invite`
//!                └─▶ Ringing event ─▶ Calls::apply             `ringing event: tracker`
//!                                       ├─ journal, callbacks  `…: journal`, `…: callbacks`
//!                                       └─ Hub::route ─▶ agent queue        `…: hub`
//!  agent queue ─▶ latency metric                               `ringing frame: dequeue …`
//!      └─▶ Outbound::render ─▶ Message::Text                   `ringing frame: render`
//!  CANCEL ─▶ Endpoint::handle ─▶ 200 + 487 ─▶ Answered event   `cancel`
//!  … the same for the Answered event and its frame             `answered …`
//!  ACK ─▶ Endpoint::handle                                     `ack`
//! ```
//!
//! Deterministic: a run is one thread, no timers fire, and the inputs are fixed, so a rerun
//! prints the same counts (checked by running it twice and comparing the `--out` files).
//!
//! Run with: `cargo bench --bench alloc` (`-- --calls N --warm-up N --out FILE --log`);
//! `cargo test --bench alloc` runs a short smoke pass. Described in benches/README.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use axum::extract::ws::Message;
use screenpop::calls::journal::Journal;
use screenpop::calls::{CallUpdate, Calls, Observer};
use screenpop::push::Hub;
use screenpop::push::message::Outbound;
use screenpop::resolve::{Directory, Index, Key, Normaliser};
use screenpop::telephony::sip::{Endpoint, EndpointConfig, ReplyPath, Transport};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// The counting allocator.

/// Counts every allocation, then hands it to `System`.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ZEROED: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes asked for: the size of an `alloc`/`alloc_zeroed`, the new size of a `realloc`.
static BYTES: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

/// The sizes of the allocations of one call, in order, while `TRACING` is on: the kind in the
/// top byte, the size below. Fixed and static, so recording never allocates.
const TRACE_LEN: usize = 2048;
static TRACE: [AtomicU64; TRACE_LEN] = [const { AtomicU64::new(0) }; TRACE_LEN];
static TRACE_AT: AtomicUsize = AtomicUsize::new(0);
static TRACING: AtomicBool = AtomicBool::new(false);

const KIND_ALLOC: u64 = 0;
const KIND_ZEROED: u64 = 1;
const KIND_REALLOC: u64 = 2;

fn trace(kind: u64, size: usize) {
    if TRACING.load(Relaxed) {
        let i = TRACE_AT.fetch_add(1, Relaxed);
        if let Some(slot) = TRACE.get(i) {
            slot.store(kind << 56 | size as u64, Relaxed);
        }
    }
}

// The one unsafe item of the bench (Cargo.toml denies unsafe code package-wide; the library
// forbids it). Every method only bumps atomics, which never allocate, and forwards its
// arguments unchanged to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        trace(KIND_ALLOC, layout.size());
        // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract (a non-zero size), which
        // is all `System.alloc` asks; the layout is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ZEROED.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        trace(KIND_ZEROED, layout.size());
        // SAFETY: as for `alloc`: the caller's contract is `System.alloc_zeroed`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREES.fetch_add(1, Relaxed);
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout` (the
        // caller's contract); both are passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        trace(KIND_REALLOC, new_size);
        // SAFETY: `ptr` came from `System` with `layout`, and `new_size` is valid for it (the
        // caller's contract, which is `System.realloc`'s); all passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocator counters: a reading, or the difference of two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    alloc: u64,
    zeroed: u64,
    realloc: u64,
    bytes: u64,
    frees: u64,
}

impl Counts {
    fn now() -> Counts {
        Counts {
            alloc: ALLOCS.load(Relaxed),
            zeroed: ZEROED.load(Relaxed),
            realloc: REALLOCS.load(Relaxed),
            bytes: BYTES.load(Relaxed),
            frees: FREES.load(Relaxed),
        }
    }

    fn since(self, before: Counts) -> Counts {
        Counts {
            alloc: self.alloc - before.alloc,
            zeroed: self.zeroed - before.zeroed,
            realloc: self.realloc - before.realloc,
            bytes: self.bytes - before.bytes,
            frees: self.frees - before.frees,
        }
    }

    fn add(&mut self, other: Counts) {
        self.alloc += other.alloc;
        self.zeroed += other.zeroed;
        self.realloc += other.realloc;
        self.bytes += other.bytes;
        self.frees += other.frees;
    }

    /// Allocations of any kind (a `realloc` counts: it may move the block).
    fn allocations(&self) -> u64 {
        self.alloc + self.zeroed + self.realloc
    }
}

// ---------------------------------------------------------------------------------------------
// Stages.

/// What is counted, in call order. The `… event` stages are `Calls::apply` less its observers,
/// which are counted apart (`Counted`).
const STAGES: [&str; 15] = [
    "invite",
    "ringing event: tracker",
    "ringing event: journal",
    "ringing event: callbacks",
    "ringing event: hub",
    "ringing frame: dequeue + latency metric",
    "ringing frame: render",
    "cancel",
    "answered event: tracker",
    "answered event: journal",
    "answered event: callbacks",
    "answered event: hub",
    "answered frame: dequeue + latency metric",
    "answered frame: render",
    "ack",
];
const INVITE: usize = 0;
/// An event's stages: tracker, then the three observers.
const RINGING: usize = 1;
/// A frame's stages: dequeue + metric, then render.
const RINGING_FRAME: usize = 5;
const CANCEL: usize = 7;
const ANSWERED: usize = 8;
const ANSWERED_FRAME: usize = 12;
const ACK: usize = 14;

/// The stages grouped as issue 19 asks (the writer's dequeue and metric apart from the
/// render); the whole call follows them.
const GROUPS: [(&str, &[usize]); 5] = [
    ("INVITE handle incl. 100 Trying", &[INVITE]),
    (
        "events: tracker + observers + hub fan-out",
        &[1, 2, 3, 4, 8, 9, 10, 11],
    ),
    (
        "writer: dequeue + latency metric",
        &[RINGING_FRAME, ANSWERED_FRAME],
    ),
    (
        "frame render (ringing, answered)",
        &[RINGING_FRAME + 1, ANSWERED_FRAME + 1],
    ),
    ("CANCEL + ACK", &[CANCEL, ACK]),
];

/// What the observers of one event allocated (indexed in the daemon's order: journal,
/// callbacks, hub; an event's stage + 1 + index), and where their allocations are in the trace.
#[derive(Default)]
struct Probe {
    counts: [Counts; 3],
    spans: Vec<(usize, usize, usize)>,
}

/// An observer counted apart: what `inner` allocates goes to the probe, not to the tracker.
struct Counted {
    index: usize,
    inner: Arc<dyn Observer>,
    probe: Arc<Mutex<Probe>>,
}

impl Observer for Counted {
    fn observe(&self, update: &CallUpdate) {
        let at = TRACE_AT.load(Relaxed);
        let before = Counts::now();
        self.inner.observe(update);
        let used = Counts::now().since(before);
        let end = TRACE_AT.load(Relaxed);
        let mut probe = self.probe.lock().unwrap_or_else(|p| p.into_inner());
        probe.counts[self.index].add(used);
        // Only while tracing (one call), where the vector has room reserved: no allocation.
        if TRACING.load(Relaxed) && probe.spans.len() < probe.spans.capacity() {
            probe.spans.push((self.index, at, end));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The call path, wired as the daemon wires it.

/// The agent whose extension rings.
const EXTENSION: &str = "201";
/// How many of the demo's customers the directory holds (and call, in turn).
const CUSTOMERS: usize = 8;

const CONFIG: &str = r#"
[sip]
udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
# No profile composition: the pop alone (compositions run on their own tasks).
[history]
enabled = false
[[agents]]
id = "agent-201"
name = "Bench Agent"
extensions = ["201"]
token_sha256 = "TOKEN"
"#;

/// The call path under count, and the PBX's end of it.
struct CallPath {
    endpoint: Arc<Endpoint>,
    events: mpsc::Receiver<screenpop::calls::CallEvent>,
    calls: Arc<Calls>,
    probe: Arc<Mutex<Probe>>,
    agent_queue: mpsc::Receiver<Outbound>,
    slow: CancellationToken,
    seq: u64,
    reply: ReplyPath,
    /// The "PBX": where the replies go.
    pbx: UdpSocket,
    pbx_addr: SocketAddr,
    buf: Vec<u8>,
    /// The agent's `Registration` (its type is the hub's own): the hub routes to the agent
    /// while it is alive.
    _registration: Box<dyn std::any::Any>,
    /// The reactor of the reply socket.
    _runtime: tokio::runtime::Runtime,
}

/// An observer counted apart (see [`Counted`]).
fn counted(index: usize, inner: Arc<dyn Observer>, probe: &Arc<Mutex<Probe>>) -> Arc<Counted> {
    Arc::new(Counted {
        index,
        inner,
        probe: probe.clone(),
    })
}

impl CallPath {
    /// Builds the call path as `Daemon::start` does, from `daemon::settings_base` of [`CONFIG`]
    /// with a directory of the demo's first [`CUSTOMERS`] customers; returns it with the
    /// customers' numbers (E.164), to call from.
    fn wire() -> anyhow::Result<(CallPath, Vec<String>)> {
        let token = screenpop::agents::TokenHash::of("alloc-bench").hex();
        let config = screenpop::config::Config::parse(
            &CONFIG.replace("TOKEN", &token),
            std::path::Path::new("<alloc bench>"),
        )?;
        let settings = screenpop::daemon::settings_base(&config)?;
        ensure!(
            settings.composer.is_none(),
            "no profile composition expected"
        );
        let normaliser = Normaliser::new(config.numbers.default_region.0);
        let csv: String = screenpop::demo::CUSTOMERS_CSV
            .lines()
            .take(1 + CUSTOMERS)
            .flat_map(|line| [line, "\n"])
            .collect();
        let directory = Directory::from_csv(
            csv.as_bytes(),
            "examples/data/customers.csv",
            normaliser,
            config.numbers.switchboard_digits,
        )?;
        let mut callers = Vec::new();
        for row in csv::Reader::from_reader(csv.as_bytes()).records() {
            let row = row?;
            let first = row.get(6).and_then(|n| n.split('|').next());
            if let Some((_, raw)) = first.and_then(|n| n.split_once(':'))
                && let Key::E164(e164) = normaliser.key(raw)
            {
                callers.push(e164);
            }
        }
        ensure!(callers.len() == CUSTOMERS, "every customer has a number");

        // The reply socket needs a reactor; no task is spawned on it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let enter = runtime.enter();
        screenpop::daemon::metrics_handle();
        let (events_tx, events) = mpsc::channel(screenpop::daemon::CALL_EVENT_QUEUE);
        let calls = Calls::new(settings.tracker.clone(), Arc::new(Index::new(directory)));
        let known: Arc<dyn Fn(&str) -> bool + Send + Sync> = {
            let agents = settings.agents.clone();
            Arc::new(move |ext: &str| agents.has_extension(ext))
        };
        let endpoint = Endpoint::new(
            EndpointConfig {
                ring_timeout: settings.ring_timeout,
                max_transactions: settings.max_transactions,
                known_extension: known,
            },
            events_tx,
        );
        // The observers in the daemon's order (no call log): journal, callbacks, hub.
        let probe = Arc::default();
        let journal = Journal::new(settings.journal, settings.agents.clone());
        calls.observe(counted(0, journal.clone(), &probe));
        calls.observe(counted(1, settings.callbacks.clone(), &probe));
        let hub = Hub::new(
            calls.clone(),
            None,
            Some(journal),
            settings.composer.clone(),
            CancellationToken::new(),
        );
        hub.load_picks(Vec::new());
        hub.set_callbacks(settings.callbacks.clone());
        calls.observe(counted(2, hub.observer(), &probe));

        // The agent, as a WebSocket session registers it (push::session).
        let agent = settings
            .agents
            .by_extension(EXTENSION)
            .context("the agent")?;
        let (tx, agent_queue) = mpsc::channel(settings.push.session.queue);
        let slow = CancellationToken::new();
        let registration = hub.register(&agent, tx, slow.clone());

        let listener = UdpSocket::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let socket = Arc::new(tokio::net::UdpSocket::from_std(listener)?);
        let pbx = UdpSocket::bind("127.0.0.1:0")?;
        pbx.set_read_timeout(Some(Duration::from_secs(2)))?;
        let pbx_addr = pbx.local_addr()?;
        drop(enter);
        // `try_send_to` sends only once the reactor has seen the socket writable (as the
        // daemon's running reactor has); it stays so while sends succeed.
        runtime.block_on(socket.writable())?;
        let path = CallPath {
            endpoint,
            events,
            calls,
            probe,
            agent_queue,
            slow,
            // `ready` and the snapshot went first.
            seq: 2,
            reply: ReplyPath::Udp {
                socket,
                peer: pbx_addr,
            },
            pbx,
            pbx_addr,
            buf: vec![0; 65_536],
            _registration: Box::new(registration),
            _runtime: runtime,
        };
        Ok((path, callers))
    }

    /// The next reply at the PBX, which must have status `status`.
    fn reply(&mut self, status: &str) -> anyhow::Result<String> {
        let (len, _) = self
            .pbx
            .recv_from(&mut self.buf)
            .with_context(|| format!("waiting for the {status}"))?;
        let text = String::from_utf8_lossy(&self.buf[..len]).into_owned();
        ensure!(
            text.starts_with(&format!("SIP/2.0 {status} ")),
            "expected a {status}, got {}",
            text.lines().next().unwrap_or_default()
        );
        Ok(text)
    }

    /// Takes one event from the channel and applies it, as `Calls::run` does; counts the
    /// observers apart. Returns the tracker's own count and the observers'.
    fn event(&mut self, window: &mut Window) -> anyhow::Result<(Counts, [Counts; 3])> {
        {
            // The spans stay: they are kept for the traced call only, all its events.
            let mut probe = self.probe.lock().unwrap_or_else(|p| p.into_inner());
            probe.counts = Default::default();
        }
        let (events, calls) = (&mut self.events, &self.calls);
        let (applied, total) = window.measure(|| match events.try_recv() {
            Ok(event) => {
                calls.apply(event);
                true
            }
            Err(_) => false,
        });
        ensure!(applied, "the endpoint queued no call event");
        let observers = self.probe.lock().unwrap_or_else(|p| p.into_inner()).counts;
        let mut tracker = total;
        for o in &observers {
            tracker = tracker.since(*o);
        }
        Ok((tracker, observers))
    }

    /// Takes the agent's next message and renders its frame, as the session's writer does
    /// (stages `stage`: the dequeue and the fan-out latency metric, `stage + 1`: the render into
    /// a WebSocket text message); checks that it is a `kind` and that nothing else is queued.
    fn frame(
        &mut self,
        kind: &str,
        stage: usize,
        window: &mut Window,
    ) -> anyhow::Result<(Counts, Counts)> {
        let queue = &mut self.agent_queue;
        window.stage = stage;
        let (msg, taken) = window.measure(|| {
            let msg = queue.try_recv().ok()?;
            metrics::histogram!(screenpop::push::PUSH_FANOUT_SECONDS)
                .record(msg.created().elapsed().as_secs_f64());
            Some(msg)
        });
        let Some(msg) = msg else {
            bail!("no {kind} frame for the agent");
        };
        ensure!(
            msg.kind() == kind,
            "expected a {kind} frame, got {}",
            msg.kind()
        );
        window.stage = stage + 1;
        let seq = self.seq;
        let (frame, rendered) = window.measure(|| Message::Text(msg.render(seq).into()));
        self.seq += 1;
        ensure!(
            matches!(&frame, Message::Text(t) if t.as_str().contains(&format!("\"type\":\"{kind}\""))),
            "the {kind} frame is not its text"
        );
        ensure!(self.agent_queue.is_empty(), "more than one frame per event");
        ensure!(
            !self.slow.is_cancelled(),
            "the agent was dropped as too slow"
        );
        Ok((taken, rendered))
    }

    /// One whole call; adds each stage's counts to `tally`.
    fn call(
        &mut self,
        messages: &Messages,
        n: usize,
        caller: &str,
        tally: &mut [Counts; STAGES.len()],
        window: &mut Window,
    ) -> anyhow::Result<()> {
        let invite = messages.invite(n, caller);
        let (endpoint, reply, source) = (&self.endpoint, &self.reply, self.pbx_addr);
        window.stage = INVITE;
        let (taken, counts) = window
            .measure(|| endpoint.handle(invite.as_bytes(), Transport::Datagram, source, reply));
        ensure!(taken, "the INVITE was refused");
        tally[INVITE].add(counts);
        self.reply("100")?;

        window.stage = RINGING;
        let (tracker, observers) = self.event(window)?;
        tally[RINGING].add(tracker);
        for (i, o) in observers.iter().enumerate() {
            tally[RINGING + 1 + i].add(*o);
        }
        let (taken, rendered) = self.frame("ringing", RINGING_FRAME, window)?;
        tally[RINGING_FRAME].add(taken);
        tally[RINGING_FRAME + 1].add(rendered);

        let cancel = messages.cancel(&invite);
        let (endpoint, reply) = (&self.endpoint, &self.reply);
        window.stage = CANCEL;
        let (taken, counts) = window
            .measure(|| endpoint.handle(cancel.as_bytes(), Transport::Datagram, source, reply));
        ensure!(taken, "the CANCEL was refused");
        tally[CANCEL].add(counts);
        self.reply("200")?;
        let terminated = self.reply("487")?;
        let tag = to_tag(&terminated).context("the 487 has no To tag")?;

        window.stage = ANSWERED;
        let (tracker, observers) = self.event(window)?;
        tally[ANSWERED].add(tracker);
        for (i, o) in observers.iter().enumerate() {
            tally[ANSWERED + 1 + i].add(*o);
        }
        let (taken, rendered) = self.frame("answered", ANSWERED_FRAME, window)?;
        tally[ANSWERED_FRAME].add(taken);
        tally[ANSWERED_FRAME + 1].add(rendered);

        let ack = messages.ack(&invite, &tag);
        let (endpoint, reply) = (&self.endpoint, &self.reply);
        window.stage = ACK;
        let (taken, counts) =
            window.measure(|| endpoint.handle(ack.as_bytes(), Transport::Datagram, source, reply));
        ensure!(taken, "the ACK was refused");
        tally[ACK].add(counts);
        Ok(())
    }
}

/// The To tag of a response.
fn to_tag(response: &str) -> Option<String> {
    let to = response
        .lines()
        .find(|l| l.starts_with("To:") || l.starts_with("t:"))?;
    let tag = to.split(";tag=").nth(1)?.split(';').next()?.trim();
    Some(tag.to_owned())
}

/// Counts one stage at a time; while tracing, remembers where each stage's allocations are in
/// the trace.
#[derive(Default)]
struct Window {
    stage: usize,
    /// (stage, first, end) trace positions.
    marks: Vec<(usize, usize, usize)>,
}

impl Window {
    fn measure<T>(&mut self, f: impl FnOnce() -> T) -> (T, Counts) {
        let at = TRACE_AT.load(Relaxed);
        let before = Counts::now();
        let out = f();
        let counts = Counts::now().since(before);
        let end = TRACE_AT.load(Relaxed);
        if TRACING.load(Relaxed) {
            self.marks.push((self.stage, at, end));
        }
        (out, counts)
    }
}

// ---------------------------------------------------------------------------------------------
// The messages.

/// The carrier INVITE of the PBX corpus, and what is replaced in it per call.
struct Messages {
    invite: String,
}

/// The corpus INVITE's Request-URI (the DID); a fork to the agent's phone carries the
/// extension instead (the To keeps the DID).
const CORPUS_REQUEST_LINE: &str = "INVITE sip:+18005550150@192.0.2.90:5060;user=phone SIP/2.0";
const REQUEST_URI: &str = "sip:201@192.0.2.90:5060";
/// The caller, in From, Contact and P-Asserted-Identity.
const CORPUS_CALLER: &str = "+14155550112";
/// Eight hex digits ending the branch, the From tag and the Call-ID's local part, each made
/// the call's number (same length: every INVITE is the same size).
const CORPUS_UNIQUE: [&str; 3] = ["+a64dfc12\r\n", "+6af53138\r\n", "HvP56Y2c@"];

impl Messages {
    fn load() -> anyhow::Result<Messages> {
        let path = format!(
            "{}/tests/corpus/pbx/carrier-pai-tel.sip",
            env!("CARGO_MANIFEST_DIR")
        );
        let invite = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        for needle in [CORPUS_REQUEST_LINE, CORPUS_CALLER]
            .iter()
            .chain(&CORPUS_UNIQUE)
        {
            ensure!(invite.contains(needle), "{path} has no {needle:?}");
        }
        Ok(Messages { invite })
    }

    /// Call `n`'s INVITE from `caller`.
    fn invite(&self, n: usize, caller: &str) -> String {
        let mut text = self
            .invite
            .replacen(
                CORPUS_REQUEST_LINE,
                &format!("INVITE {REQUEST_URI} SIP/2.0"),
                1,
            )
            .replace(CORPUS_CALLER, caller);
        for unique in CORPUS_UNIQUE {
            let hex = format!("{n:08x}");
            let with = match unique.chars().next() {
                Some('+') => format!("+{hex}\r\n"),
                _ => format!("{hex}@"),
            };
            text = text.replacen(unique, &with, 1);
        }
        text
    }

    /// The INVITE's CANCEL, as a PBX sends it when another phone answered (loadgen's).
    fn cancel(&self, invite: &str) -> String {
        let h = |name| header(invite, name);
        format!(
            "CANCEL {REQUEST_URI} SIP/2.0\r\n{}\r\n{}\r\n{}\r\n{}\r\n{}\r\nCSeq: {} CANCEL\r\n\
             Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\nContent-Length: 0\r\n\r\n",
            h("Via:"),
            h("Max-Forwards:"),
            h("From:"),
            h("To:"),
            h("Call-ID:"),
            cseq(invite),
        )
    }

    /// The ACK of the INVITE's 487 (To tag `tag`): the same branch [RFC 3261 §17.1.1.3].
    fn ack(&self, invite: &str, tag: &str) -> String {
        let h = |name| header(invite, name);
        format!(
            "ACK {REQUEST_URI} SIP/2.0\r\n{}\r\n{}\r\n{}\r\n{};tag={tag}\r\n{}\r\nCSeq: {} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            h("Via:"),
            h("Max-Forwards:"),
            h("From:"),
            h("To:"),
            h("Call-ID:"),
            cseq(invite),
        )
    }
}

/// The whole header line starting with `name` (the corpus has each once).
fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .trim_end()
}

/// The INVITE's CSeq number.
fn cseq(invite: &str) -> &str {
    header(invite, "CSeq:")
        .trim_start_matches("CSeq:")
        .split_whitespace()
        .next()
        .unwrap_or("1")
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Options {
    calls: usize,
    warm_up: usize,
    out: Option<std::path::PathBuf>,
    log: bool,
}

const USAGE: &str =
    "usage: cargo bench --bench alloc [-- --calls N] [--warm-up N] [--out FILE] [--log]";

/// `cargo bench` passes `--bench`; without it (`cargo test --bench alloc`) a short smoke run.
fn options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut options = Options {
        calls: if smoke { 200 } else { 10_000 },
        warm_up: if smoke { 50 } else { 1_000 },
        out: None,
        log: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--calls" => options.calls = value()?.parse()?,
            "--warm-up" => options.warm_up = value()?.parse()?,
            "--out" => options.out = Some(value()?.into()),
            "--log" => options.log = true,
            "--bench" => {}
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    ensure!(options.calls > 0, "--calls must be at least 1");
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    if options.log {
        // Close to the daemon's default (text lines at info); written nowhere.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
    }
    let messages = Messages::load()?;
    let (mut path, callers) = CallPath::wire()?;
    let mut window = Window::default();
    let mut discard = [Counts::default(); STAGES.len()];
    for n in 0..options.warm_up {
        path.call(
            &messages,
            n,
            &callers[n % callers.len()],
            &mut discard,
            &mut window,
        )?;
    }

    let mut tally = [Counts::default(); STAGES.len()];
    let first = options.warm_up;
    let last = first + options.calls - 1;
    let before = Counts::now();
    for n in first..last {
        path.call(
            &messages,
            n,
            &callers[n % callers.len()],
            &mut tally,
            &mut window,
        )?;
    }
    // The last call is also traced: each allocation's size, by stage.
    {
        let mut probe = path.probe.lock().unwrap_or_else(|p| p.into_inner());
        probe.spans = Vec::with_capacity(64);
    }
    window.marks = Vec::with_capacity(64);
    TRACE_AT.store(0, Relaxed);
    TRACING.store(true, Relaxed);
    let traced = path.call(
        &messages,
        last,
        &callers[last % callers.len()],
        &mut tally,
        &mut window,
    );
    TRACING.store(false, Relaxed);
    let run = Counts::now().since(before);
    traced?;
    let trace = trace_of(
        &window,
        &path.probe.lock().unwrap_or_else(|p| p.into_inner()),
    );

    let report = Report {
        options: &options,
        tally: &tally,
        run,
        trace: &trace,
        traced_call: last,
    };
    print!("{}", report.table());
    if let Some(out) = &options.out {
        let text = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(out, text + "\n").with_context(|| out.display().to_string())?;
        println!("JSON written to {}", out.display());
    }
    Ok(())
}

/// The traced call's allocation sizes by stage (`z`: zeroed, `r`: realloc).
fn trace_of(window: &Window, probe: &Probe) -> Vec<Vec<String>> {
    let recorded = TRACE_AT.load(Relaxed).min(TRACE_LEN);
    let mut stages = vec![Vec::new(); STAGES.len()];
    for &(stage, first, end) in &window.marks {
        let slots = TRACE.iter().enumerate().take(end.min(recorded)).skip(first);
        for (i, slot) in slots {
            // An event's allocations inside an observer's span are that observer's.
            let owner = probe
                .spans
                .iter()
                .find(|&&(_, a, b)| (a..b).contains(&i))
                .map_or(stage, |&(observer, _, _)| stage + 1 + observer);
            let word = slot.load(Relaxed);
            let size = word & ((1 << 56) - 1);
            stages[owner].push(match word >> 56 {
                KIND_ZEROED => format!("z{size}"),
                KIND_REALLOC => format!("r{size}"),
                _ => size.to_string(),
            });
        }
    }
    stages
}

struct Report<'a> {
    options: &'a Options,
    tally: &'a [Counts; STAGES.len()],
    /// Everything allocated and freed over the counted calls, between the stages too.
    run: Counts,
    trace: &'a [Vec<String>],
    traced_call: usize,
}

impl Report<'_> {
    /// Blocks allocated and not freed over the counted calls.
    fn retained(&self) -> f64 {
        (self.run.alloc + self.run.zeroed) as f64 - self.run.frees as f64
    }

    fn groups(&self) -> Vec<(&'static str, Counts)> {
        let mut rows: Vec<(&'static str, Counts)> = GROUPS
            .iter()
            .map(|(name, stages)| {
                let mut sum = Counts::default();
                for &s in *stages {
                    sum.add(self.tally[s]);
                }
                (*name, sum)
            })
            .collect();
        let mut whole = Counts::default();
        for c in self.tally {
            whole.add(*c);
        }
        rows.push(("whole call", whole));
        rows
    }

    fn table(&self) -> String {
        use std::fmt::Write as _;
        let n = self.options.calls as f64;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Heap allocations on the call path: SIP fork-target call over UDP (INVITE, CANCEL \
             answered elsewhere, ACK), 1 agent, {CUSTOMERS} customers{}.\n\
             {} calls counted after {} warm-up calls; figures per call.\n",
            if self.options.log {
                ", info logging"
            } else {
                ""
            },
            self.options.calls,
            self.options.warm_up,
        );
        let head = format!(
            "{:<44} {:>9} {:>9} {:>7} {:>8} {:>10} {:>8}",
            "stage", "allocs", "alloc", "zeroed", "realloc", "bytes", "frees"
        );
        let row = |name: &str, c: &Counts| {
            format!(
                "{:<44} {:>9.3} {:>9.3} {:>7.3} {:>8.3} {:>10.1} {:>8.3}",
                name,
                c.allocations() as f64 / n,
                c.alloc as f64 / n,
                c.zeroed as f64 / n,
                c.realloc as f64 / n,
                c.bytes as f64 / n,
                c.frees as f64 / n,
            )
        };
        let _ = writeln!(out, "{head}");
        for (name, c) in STAGES.iter().zip(self.tally) {
            let _ = writeln!(out, "{}", row(name, c));
        }
        let _ = writeln!(out, "\n{head}");
        for (name, c) in self.groups() {
            let _ = writeln!(out, "{}", row(name, &c));
        }
        let _ = writeln!(
            out,
            "\nStill held after the counted calls: {:.3} blocks per call (allocations less frees, \
             the bench's own included): transactions, calls and journal entries, which the \
             daemon's timers and expiry free later; they do not run here.",
            self.retained() / n
        );
        let _ = writeln!(
            out,
            "\nOne call's allocations (call {}), bytes each (z: zeroed, r: realloc):",
            self.traced_call
        );
        for (name, sizes) in STAGES.iter().zip(self.trace) {
            let _ = writeln!(out, "  {name:<41} {}", sizes.join(" "));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let n = self.options.calls as f64;
        let entry = |name: &str, c: &Counts| {
            json!({
                "stage": name,
                "allocations": c.allocations(),
                "alloc": c.alloc,
                "alloc_zeroed": c.zeroed,
                "realloc": c.realloc,
                "bytes": c.bytes,
                "frees": c.frees,
                "per_call": {
                    "allocations": c.allocations() as f64 / n,
                    "bytes": c.bytes as f64 / n,
                },
            })
        };
        json!({
            "bench": "alloc",
            "calls": self.options.calls,
            "warm_up": self.options.warm_up,
            "customers": CUSTOMERS,
            "log": self.options.log,
            "stages": STAGES.iter().zip(self.tally).map(|(s, c)| entry(s, c)).collect::<Vec<_>>(),
            "groups": self.groups().iter().map(|(s, c)| entry(s, c)).collect::<Vec<_>>(),
            "run": entry("whole run, the bench's own included", &self.run),
            "retained_per_call": self.retained() / n,
            "trace": {
                "call": self.traced_call,
                "stages": STAGES.iter().zip(self.trace)
                    .map(|(s, t)| (s.to_string(), json!(t)))
                    .collect::<serde_json::Map<_, _>>(),
            },
        })
    }
}
