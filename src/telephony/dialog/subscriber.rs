//! The dialog-event subscriber for one PBX, as a state machine without I/O: datagrams and the
//! time go in, datagrams to send and call events come out. `client` drives it with a UDP socket;
//! the tests drive it by hand, time included.
//!
//! One subscription per extension [RFC 6665, RFC 4235 §3; PROTOCOLS.md §5 "Flow"]:
//!
//! ```text
//!            SUBSCRIBE ──401/407──▶ SUBSCRIBE + credentials ──2xx──▶ Active ──80 % of Expires──┐
//!   start ──▶ (retransmitted T1…T2, gives up after 64·T1)                 ▲  refresh in-dialog │
//!     ▲                                                                   └────────2xx─────────┘
//!     │  timeout, ≥300, 481 on refresh, expiry without refresh, Subscription-State: terminated
//!     └──────────── retry after `retry-after`, else backoff (min … max, jittered) ◀─────────┘
//! ```
//!
//! Every NOTIFY of a subscription is answered 200 (481 when it matches none, 489 for another
//! event package). Documents older than the last one seen are dropped; a `partial` document after
//! a gap is applied and a refresh asks for full state, which rebuilds the extension's dialogs
//! [RFC 4235 §4.1.1]. A body-less NOTIFY of an active subscription (Kamailio's first when nothing
//! was published yet) counts as a full document without dialogs.
//!
//! Requests all go to the configured PBX address (it acts as outbound proxy); in-dialog requests
//! carry the remote target as Request-URI and the route set as `Route`. UDP only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::INPUT;
use super::digest::{Challenge, DigestError};
use super::info::{self, DialogInfo, DocState};
use super::map::Mapper;
use crate::backoff::Backoff;
use crate::calls::CallEvent;
use crate::telephony::cti::{self, Secret};
use crate::telephony::sip::grammar::{NameAddr, parse_cseq, split_list};
use crate::telephony::sip::reply::{self, Reply};
use crate::telephony::sip::scan::{Message, Name, StartLine, Transport, scan, trim};

/// RTT estimate: the first retransmission interval [RFC 3261 §17.1.2.1].
pub const T1: Duration = Duration::from_millis(500);
/// Longest retransmission interval.
pub const T2: Duration = Duration::from_secs(4);
/// A SUBSCRIBE without a final response after this has failed (Timer F).
pub const TIMER_F: Duration = Duration::from_secs(32);
/// Refresh when this share of the granted `Expires` has passed (a screenpop choice).
pub const REFRESH_AT: f64 = 0.8;
/// At most this many challenges are answered for one request (a realm loop stops here).
pub const MAX_AUTH_ROUNDS: u8 = 3;
/// The longest `retry-after` honoured (a PBX asking for days is asked again after this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a subscription failed. Says whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The network or the PBX: no final response in time.
    #[error("no final response to SUBSCRIBE within {0:?}")]
    Timeout(Duration),
    /// The PBX refused the subscription (404: no such extension; 403: not allowed; 489: no
    /// dialog package).
    #[error("SUBSCRIBE refused: {code} {reason}")]
    Refused {
        /// The status code.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The operator's config: the PBX rejected the username or password.
    #[error("credentials refused for realm {realm:?}; check username and password")]
    Credentials {
        /// The realm challenged.
        realm: String,
    },
    /// The PBX's challenge cannot be answered.
    #[error("cannot answer the challenge: {0}")]
    Challenge(#[from] DigestError),
    /// The PBX ended the subscription.
    #[error("the PBX ended the subscription ({0})")]
    Terminated(String),
    /// The granted subscription ran out before a refresh succeeded.
    #[error("the subscription expired before a refresh succeeded")]
    Expired,
}

/// What the subscriber needs to know.
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    /// The PBX's configured name: call-key prefix and metrics `peer`.
    pub name: String,
    /// The SIP domain of the extensions' AORs (`sip:2001@domain`).
    pub domain: String,
    /// The authentication username, also the From user.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The extensions to watch, one subscription each.
    pub extensions: Vec<String>,
    /// `Expires` asked for.
    pub expires: Duration,
    /// First retry delay after a failure.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Where the PBX reaches us: Via sent-by and Contact.
    pub contact: SocketAddr,
    /// Where requests go.
    pub pbx: SocketAddr,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram.
    Send {
        /// To whom.
        to: SocketAddr,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Hand these to the tracker.
    Events(Vec<CallEvent>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Initial,
    Refresh,
    Unsubscribe,
}

#[derive(Debug)]
struct Tx {
    kind: Kind,
    cseq: u32,
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
    /// The nonce this request answered, if any.
    answered: Option<String>,
    rounds: u8,
}

#[derive(Debug)]
struct Auth {
    challenge: Challenge,
    proxy: bool,
    nc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting to (re)subscribe.
    Idle,
    /// The initial SUBSCRIBE is out.
    Subscribing,
    /// Granted.
    Active,
}

#[derive(Debug)]
struct Sub {
    ext: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    remote_tag: Option<String>,
    remote_cseq: Option<u32>,
    route: Vec<String>,
    target: Option<String>,
    phase: Phase,
    tx: Option<Tx>,
    auth: Option<Auth>,
    /// `Expires` to ask for (raised by a 423's `Min-Expires`).
    expires: u32,
    version: Option<u64>,
    synced: bool,
    /// A gap was seen: refresh for full state as soon as the subscription allows.
    want_full: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    /// Whether this subscription is the first one (not a resubscription).
    first: bool,
}

/// The subscriptions of one PBX.
#[derive(Debug)]
pub struct Subscriber {
    s: SubscriptionSettings,
    subs: Vec<Sub>,
    by_call_id: HashMap<String, usize>,
    mapper: Mapper,
    out: Vec<Output>,
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A header's values by name (case-insensitive), or by its compact form.
fn header<'a>(
    msg: &Message<'a>,
    name: &'static str,
    compact: Option<&'static str>,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    msg.fields()
        .filter(move |f| {
            f.raw_name.eq_ignore_ascii_case(name.as_bytes())
                || compact.is_some_and(|c| f.raw_name.eq_ignore_ascii_case(c.as_bytes()))
        })
        .map(|f| f.value)
}

fn seconds(value: &[u8]) -> Option<u32> {
    let digits = trim(value);
    let digits = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(digits, |end| &digits[..end]);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn tag_of(value: Option<&[u8]>) -> Option<String> {
    let na = NameAddr::parse(value?).ok()?;
    let tag = na.param("tag")?;
    (!tag.is_empty()).then(|| String::from_utf8_lossy(tag).into_owned())
}

/// `Subscription-State` [RFC 6665 §8.2.3]: the state, `expires`, `reason`, `retry-after`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubState {
    state: String,
    expires: Option<u32>,
    reason: Option<String>,
    retry_after: Option<u32>,
}

fn sub_state(value: &[u8]) -> SubState {
    let value = String::from_utf8_lossy(value);
    let mut parts = value.split(';');
    let state = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut out = SubState {
        state,
        expires: None,
        reason: None,
        retry_after: None,
    };
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "expires" => out.expires = v.parse().ok(),
            "retry-after" => out.retry_after = v.parse().ok(),
            "reason" => {
                out.reason = Some(v.chars().take(32).collect::<String>().to_ascii_lowercase())
            }
            _ => {}
        }
    }
    out
}

impl Subscriber {
    /// Creates the subscriptions and sends their first SUBSCRIBEs.
    pub fn new(s: SubscriptionSettings, now: Instant) -> Self {
        let expires = u32::try_from(s.expires.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        let subs = s
            .extensions
            .iter()
            .map(|ext| Sub {
                ext: ext.clone(),
                call_id: String::new(),
                from_tag: String::new(),
                cseq: 0,
                remote_tag: None,
                remote_cseq: None,
                route: Vec::new(),
                target: None,
                phase: Phase::Idle,
                tx: None,
                auth: None,
                expires,
                version: None,
                synced: false,
                want_full: false,
                backoff: Backoff::new(s.retry_min, s.retry_max),
                retry_at: None,
                refresh_at: None,
                expires_at: None,
                first: true,
            })
            .collect();
        let mut me = Subscriber {
            mapper: Mapper::new(&s.name),
            s,
            subs,
            by_call_id: HashMap::new(),
            out: Vec::new(),
        };
        for i in 0..me.subs.len() {
            me.start(i, now);
        }
        me.gauges();
        me
    }

    /// The outputs produced since the last call.
    pub fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// How many subscriptions are active.
    pub fn active(&self) -> usize {
        self.subs
            .iter()
            .filter(|s| s.phase == Phase::Active)
            .count()
    }

    /// When [`Subscriber::on_timer`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.subs
            .iter()
            .flat_map(|s| {
                let tx = s.tx.as_ref();
                [
                    tx.map(|t| t.next),
                    tx.map(|t| t.give_up),
                    s.retry_at.filter(|_| s.phase == Phase::Idle),
                    s.refresh_at
                        .filter(|_| s.phase == Phase::Active && s.tx.is_none()),
                    s.expires_at.filter(|_| s.phase == Phase::Active),
                ]
            })
            .flatten()
            .min()
    }

    fn aor(&self, ext: &str) -> String {
        format!("sip:{ext}@{}", self.s.domain)
    }

    /// A fresh subscription for `subs[i]`: new Call-ID and tag, initial SUBSCRIBE.
    fn start(&mut self, i: usize, now: Instant) {
        let sub = &mut self.subs[i];
        if !sub.first {
            cti::count_reconnect(INPUT);
        }
        sub.first = false;
        self.by_call_id.remove(&sub.call_id);
        sub.call_id = format!("{}@screenpop", random_token());
        sub.from_tag = random_token();
        sub.cseq = 0;
        sub.remote_tag = None;
        sub.remote_cseq = None;
        sub.route.clear();
        sub.target = None;
        sub.phase = Phase::Subscribing;
        sub.version = None;
        sub.synced = false;
        sub.want_full = false;
        sub.retry_at = None;
        sub.refresh_at = None;
        sub.expires_at = None;
        self.by_call_id.insert(sub.call_id.clone(), i);
        self.send_subscribe(i, Kind::Initial, now);
    }

    fn send_subscribe(&mut self, i: usize, kind: Kind, now: Instant) {
        let (bytes, cseq, answered) = self.subscribe_bytes(i, kind);
        let sub = &mut self.subs[i];
        let rounds = match &sub.tx {
            Some(tx) if tx.kind == kind && answered.is_some() => tx.rounds + 1,
            _ => 0,
        };
        self.out.push(Output::Send {
            to: self.s.pbx,
            bytes: bytes.clone(),
        });
        sub.tx = Some(Tx {
            kind,
            cseq,
            bytes,
            next: now + T1,
            interval: T1,
            give_up: now + TIMER_F,
            answered,
            rounds,
        });
    }

    /// Builds a SUBSCRIBE; returns it, its CSeq and the nonce it answers.
    fn subscribe_bytes(&mut self, i: usize, kind: Kind) -> (Vec<u8>, u32, Option<String>) {
        let aor = self.aor(&self.subs[i].ext);
        let s = &self.s;
        let sub = &mut self.subs[i];
        sub.cseq = sub.cseq.wrapping_add(1).max(1);
        let ruri = match (&sub.remote_tag, &sub.target) {
            (Some(_), Some(target)) => target.clone(),
            _ => aor.clone(),
        };
        let expires = if kind == Kind::Unsubscribe {
            0
        } else {
            sub.expires
        };
        let contact = host_port(s.contact);
        let mut m = format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {contact};rport;branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\n",
            branch = random_token(),
        );
        for route in &sub.route {
            m.push_str(&format!("Route: {route}\r\n"));
        }
        m.push_str(&format!(
            "From: <sip:{user}@{domain}>;tag={tag}\r\n",
            user = s.username,
            domain = s.domain,
            tag = sub.from_tag
        ));
        match &sub.remote_tag {
            Some(tag) => m.push_str(&format!("To: <{aor}>;tag={tag}\r\n")),
            None => m.push_str(&format!("To: <{aor}>\r\n")),
        }
        m.push_str(&format!(
            "Call-ID: {call_id}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:{user}@{contact}>\r\n\
             Event: dialog\r\n\
             Accept: {accept}\r\n\
             Allow: NOTIFY, OPTIONS\r\n\
             Expires: {expires}\r\n\
             User-Agent: {agent}\r\n",
            call_id = sub.call_id,
            cseq = sub.cseq,
            user = s.username,
            accept = info::CONTENT_TYPE,
            agent = reply::SERVER,
        ));
        let mut answered = None;
        if let Some(auth) = &mut sub.auth {
            auth.nc = auth.nc.wrapping_add(1).max(1);
            let value = auth.challenge.answer(
                &s.username,
                s.password.expose(),
                "SUBSCRIBE",
                &ruri,
                auth.nc,
                &random_token(),
            );
            let name = if auth.proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            m.push_str(&format!("{name}: {value}\r\n"));
            answered = Some(auth.challenge.nonce.clone());
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        // Values come from the validated config or the PBX's own headers; a stray line break
        // would still split a header, so none survives.
        let bytes: Vec<u8> = m.into_bytes();
        (bytes, sub.cseq, answered)
    }

    /// Takes one datagram from `from`.
    pub fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        match scan(bytes, Transport::Datagram) {
            Ok(msg) => match msg.start {
                StartLine::Response { code, reason } => {
                    let reason = String::from_utf8_lossy(reason).chars().take(64).collect();
                    self.on_response(&msg, code, reason, now)
                }
                StartLine::Request { method, .. } => self.on_request(&msg, method, from, now),
            },
            Err(_) => cti::count_garbage(INPUT),
        }
        self.gauges();
    }

    fn on_response(&mut self, msg: &Message<'_>, code: u16, reason: String, now: Instant) {
        let Some(&i) = msg
            .headers
            .get(Name::CallId)
            .and_then(|c| self.by_call_id.get(&*String::from_utf8_lossy(trim(c))))
        else {
            return;
        };
        let Some((cseq, method)) = msg.headers.get(Name::CSeq).and_then(|c| parse_cseq(c).ok())
        else {
            return;
        };
        let sub = &mut self.subs[i];
        let Some(tx) = sub.tx.as_mut() else {
            return;
        };
        if cseq != tx.cseq || !method.eq_ignore_ascii_case(b"SUBSCRIBE") {
            return; // a late response to an earlier request
        }
        let kind = tx.kind;
        if code < 200 {
            tx.interval = T2;
            tx.next = now + T2;
            return;
        }
        let tx = sub.tx.take();
        if kind == Kind::Unsubscribe {
            return;
        }
        match code {
            200..=299 => {
                if sub.remote_tag.is_none() {
                    sub.remote_tag = tag_of(msg.headers.get(Name::To));
                    let mut route: Vec<String> = header(msg, "Record-Route", None)
                        .flat_map(split_list)
                        .map(|r| String::from_utf8_lossy(r).into_owned())
                        .collect();
                    route.reverse();
                    sub.route = route;
                }
                if let Some(target) = contact_uri(msg) {
                    sub.target = Some(target);
                }
                let granted = header(msg, "Expires", None)
                    .next()
                    .and_then(seconds)
                    .unwrap_or(sub.expires);
                if granted == 0 {
                    self.fail(
                        i,
                        now,
                        SubscribeError::Terminated("granted Expires: 0".into()),
                        None,
                    );
                    return;
                }
                if kind == Kind::Initial {
                    tracing::info!(extension = %sub.ext, expires = granted, "Dialog subscription active.");
                }
                sub.backoff.reset();
                self.activate(i, granted, now);
            }
            401 | 407 => {
                let proxy = code == 407;
                let name = if proxy {
                    "Proxy-Authenticate"
                } else {
                    "WWW-Authenticate"
                };
                let challenge = match Challenge::pick(header(msg, name, None)) {
                    Ok(c) => c,
                    Err(error) => return self.fail(i, now, error.into(), None),
                };
                let rounds = tx.as_ref().map_or(0, |t| t.rounds);
                let repeated = tx
                    .as_ref()
                    .and_then(|t| t.answered.as_deref())
                    .is_some_and(|n| n == challenge.nonce);
                if (repeated && !challenge.stale) || rounds >= MAX_AUTH_ROUNDS {
                    let realm = challenge.realm.clone();
                    return self.fail(i, now, SubscribeError::Credentials { realm }, None);
                }
                sub.auth = Some(Auth {
                    challenge,
                    proxy,
                    nc: 0,
                });
                sub.tx = tx;
                self.send_subscribe(i, kind, now);
            }
            423 => {
                let min = header(msg, "Min-Expires", None).next().and_then(seconds);
                match min.filter(|m| *m > sub.expires) {
                    Some(min) => {
                        sub.expires = min;
                        self.send_subscribe(i, kind, now);
                    }
                    None => self.fail(i, now, SubscribeError::Refused { code, reason }, None),
                }
            }
            481 if kind == Kind::Refresh => {
                // The PBX forgot the subscription: start a new one at once.
                tracing::info!(extension = %sub.ext, "Dialog subscription unknown to the PBX; subscribing anew.");
                self.start(i, now);
            }
            _ => {
                let retry_after = header(msg, "Retry-After", None).next().and_then(seconds);
                self.fail(
                    i,
                    now,
                    SubscribeError::Refused { code, reason },
                    retry_after,
                );
            }
        }
    }

    fn activate(&mut self, i: usize, expires: u32, now: Instant) {
        let sub = &mut self.subs[i];
        sub.phase = Phase::Active;
        let granted = Duration::from_secs(u64::from(expires));
        sub.expires_at = Some(now + granted);
        sub.refresh_at = Some(if sub.want_full {
            now
        } else {
            now + granted.mul_f64(REFRESH_AT)
        });
    }

    /// The subscription failed: wait `retry_after` seconds, else the backoff, and start anew.
    fn fail(&mut self, i: usize, now: Instant, error: SubscribeError, retry_after: Option<u32>) {
        let sub = &mut self.subs[i];
        let delay = match retry_after {
            Some(s) => Duration::from_secs(u64::from(s)).min(MAX_RETRY_AFTER),
            None => sub.backoff.next_delay(),
        };
        match &error {
            SubscribeError::Credentials { .. } | SubscribeError::Challenge(_) => {
                tracing::error!(extension = %sub.ext, %error, retry_in = ?delay, "Dialog subscription failed.")
            }
            _ => {
                tracing::warn!(extension = %sub.ext, %error, retry_in = ?delay, "Dialog subscription failed.")
            }
        }
        sub.phase = Phase::Idle;
        sub.tx = None;
        sub.refresh_at = None;
        sub.expires_at = None;
        sub.retry_at = Some(now + delay);
    }

    fn on_request(&mut self, msg: &Message<'_>, method: &[u8], from: SocketAddr, now: Instant) {
        if method == b"ACK" {
            return;
        }
        let respond = |out: &mut Vec<Output>, code: u16, reason: &str, extra: &[(&str, &str)]| {
            out.push(Output::Send {
                to: from,
                bytes: reply::build(
                    msg,
                    from,
                    Reply {
                        code,
                        reason,
                        to_tag: Some("screenpop"),
                        extra,
                    },
                ),
            });
        };
        if msg.defect.is_some() {
            cti::count_garbage(INPUT);
            respond(&mut self.out, 400, "Bad Request", &[]);
            return;
        }
        if method == b"OPTIONS" {
            respond(
                &mut self.out,
                200,
                "OK",
                &[("Allow", "NOTIFY, OPTIONS"), ("Accept", info::CONTENT_TYPE)],
            );
            return;
        }
        if method != b"NOTIFY" {
            respond(
                &mut self.out,
                405,
                "Method Not Allowed",
                &[("Allow", "NOTIFY, OPTIONS")],
            );
            return;
        }
        let call_id = msg
            .headers
            .get(Name::CallId)
            .map(|c| String::from_utf8_lossy(trim(c)).into_owned());
        let i = call_id.and_then(|c| self.by_call_id.get(&c).copied());
        let to_tag = tag_of(msg.headers.get(Name::To));
        let from_tag = tag_of(msg.headers.get(Name::From));
        let Some(i) = i.filter(|&i| {
            let sub = &self.subs[i];
            to_tag.as_deref() == Some(sub.from_tag.as_str())
                && (sub.remote_tag.is_none() || sub.remote_tag == from_tag)
        }) else {
            respond(&mut self.out, 481, "Subscription Does Not Exist", &[]);
            return;
        };
        let package = header(msg, "Event", Some("o"))
            .next()
            .map(|e| trim(e.split(|&b| b == b';').next().unwrap_or_default()))
            .unwrap_or_default();
        if !package.eq_ignore_ascii_case(b"dialog") {
            respond(
                &mut self.out,
                489,
                "Bad Event",
                &[("Allow-Events", "dialog")],
            );
            return;
        }
        let Some((cseq, _)) = msg.headers.get(Name::CSeq).and_then(|c| parse_cseq(c).ok()) else {
            respond(&mut self.out, 400, "Bad CSeq", &[]);
            return;
        };
        respond(&mut self.out, 200, "OK", &[]);
        cti::count_event(INPUT, "notify");
        let sub = &mut self.subs[i];
        if sub.remote_cseq.is_some_and(|last| cseq <= last) {
            return; // a retransmission, or older than what was applied
        }
        sub.remote_cseq = Some(cseq);
        if sub.remote_tag.is_none() {
            // The NOTIFY overtook the 2xx [RFC 6665 §4.1.2.4]: it establishes the dialog.
            sub.remote_tag = from_tag;
            sub.route = header(msg, "Record-Route", None)
                .flat_map(split_list)
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
        }
        if let Some(target) = contact_uri(msg) {
            sub.target = Some(target);
        }
        let state = header(msg, "Subscription-State", None)
            .next()
            .map(sub_state)
            .unwrap_or(SubState {
                state: "active".into(),
                expires: None,
                reason: None,
                retry_after: None,
            });
        let dialog_info = msg
            .headers
            .get(Name::ContentType)
            .map(|t| trim(t.split(|&b| b == b';').next().unwrap_or_default()))
            .is_some_and(|t| t.eq_ignore_ascii_case(info::CONTENT_TYPE.as_bytes()));
        if !msg.body.is_empty() && dialog_info {
            match info::parse(msg.body) {
                Ok(doc) => self.on_document(i, &doc, now),
                Err(error) => {
                    cti::count_garbage(INPUT);
                    tracing::warn!(extension = %self.subs[i].ext, %error, "Unreadable dialog-info body.");
                }
            }
        } else if msg.body.is_empty() && state.state == "active" {
            let empty = DialogInfo {
                version: None,
                state: DocState::Full,
                entity: None,
                dialogs: Vec::new(),
            };
            self.on_document(i, &empty, now);
        } else if !msg.body.is_empty() {
            cti::count_garbage(INPUT);
        }
        let sub = &mut self.subs[i];
        match state.state.as_str() {
            "terminated" => {
                let reason = state.reason.unwrap_or_else(|| "no reason".into());
                // RFC 6665 §4.1.3: deactivated and timeout invite an immediate new
                // subscription; the others wait for retry-after, else back off.
                let retry_after = state.retry_after.or(match reason.as_str() {
                    "deactivated" | "timeout" => Some(0),
                    _ => None,
                });
                self.fail(i, now, SubscribeError::Terminated(reason), retry_after);
            }
            _ => {
                if sub.tx.as_ref().is_none_or(|t| t.kind != Kind::Initial) {
                    sub.phase = Phase::Active;
                }
                if let Some(expires) = state.expires {
                    let granted = Duration::from_secs(u64::from(expires));
                    let refresh = now + granted.mul_f64(REFRESH_AT);
                    sub.expires_at = Some(now + granted);
                    if sub.refresh_at.is_none_or(|r| refresh < r) {
                        sub.refresh_at = Some(refresh);
                    }
                }
            }
        }
    }

    fn on_document(&mut self, i: usize, doc: &DialogInfo, now: Instant) {
        let sub = &mut self.subs[i];
        if let (Some(v), Some(last)) = (doc.version, sub.version)
            && v <= last
        {
            cti::count_event(INPUT, "stale");
            return;
        }
        let gap = doc.state == DocState::Partial
            && match (doc.version, sub.version) {
                (Some(v), Some(last)) => v > last.saturating_add(1),
                (_, None) => true,
                (None, Some(_)) => false,
            };
        if doc.version.is_some() {
            sub.version = doc.version;
        }
        let ext = sub.ext.clone();
        if doc.state == DocState::Full {
            if !sub.synced {
                cti::count_resync(INPUT);
            }
            sub.synced = true;
            sub.want_full = false;
        }
        if gap {
            // Something was missed: apply what came, and refresh for full state.
            tracing::info!(extension = %ext, "Gap in dialog-info versions; asking for full state.");
            sub.synced = false;
            sub.want_full = true;
            sub.refresh_at = Some(now);
        }
        let events = self.mapper.apply(&ext, doc);
        if !events.is_empty() {
            self.out.push(Output::Events(events));
        }
    }

    /// Runs what is due at `now`: retransmissions, timeouts, refreshes, retries.
    pub fn on_timer(&mut self, now: Instant) {
        for i in 0..self.subs.len() {
            let sub = &mut self.subs[i];
            if let Some(tx) = sub.tx.as_mut() {
                if now >= tx.give_up {
                    let kind = tx.kind;
                    sub.tx = None;
                    if kind != Kind::Unsubscribe {
                        self.fail(i, now, SubscribeError::Timeout(TIMER_F), None);
                    }
                    continue;
                }
                if now >= tx.next {
                    tx.interval = (tx.interval * 2).min(T2);
                    tx.next = now + tx.interval;
                    self.out.push(Output::Send {
                        to: self.s.pbx,
                        bytes: tx.bytes.clone(),
                    });
                }
                continue;
            }
            match sub.phase {
                Phase::Idle if sub.retry_at.is_some_and(|r| now >= r) => self.start(i, now),
                Phase::Active if sub.expires_at.is_some_and(|e| now >= e) => {
                    self.fail(i, now, SubscribeError::Expired, Some(0));
                }
                Phase::Active if sub.refresh_at.is_some_and(|r| now >= r) => {
                    sub.refresh_at = None;
                    self.send_subscribe(i, Kind::Refresh, now);
                }
                _ => {}
            }
        }
        self.gauges();
    }

    /// Ends every active subscription (`Expires: 0`), best effort: nothing waits for answers.
    pub fn shutdown(&mut self, now: Instant) {
        for i in 0..self.subs.len() {
            if self.subs[i].phase == Phase::Active {
                self.send_subscribe(i, Kind::Unsubscribe, now);
            }
            self.subs[i].phase = Phase::Idle;
        }
        self.gauges();
    }

    fn gauges(&self) {
        let active = self.active();
        cti::set_connected(INPUT, &self.s.name, active > 0);
        metrics::gauge!(crate::telephony::CTI_SUBSCRIBED, "input" => INPUT, "peer" => self.s.name.clone())
            .set(active as f64);
    }
}

/// The first Contact's URI.
fn contact_uri(msg: &Message<'_>) -> Option<String> {
    let value = msg.headers.get(Name::Contact)?;
    let first = split_list(value).next()?;
    let na = NameAddr::parse(first).ok()?;
    let uri = String::from_utf8_lossy(na.uri).into_owned();
    (!uri.is_empty() && !uri.contains(['\r', '\n', ' '])).then_some(uri)
}

/// `IP:port`, IPv6 in brackets.
pub fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::EndReason;

    const PBX: &str = "192.0.2.5:5060";

    fn settings() -> SubscriptionSettings {
        SubscriptionSettings {
            name: "kam".into(),
            domain: "pbx.test".into(),
            username: "screenpop".into(),
            password: Secret::new("s3cret"),
            extensions: vec!["1001".into()],
            expires: Duration::from_secs(120),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            contact: "192.0.2.9:5070".parse().expect("addr"),
            pbx: PBX.parse().expect("addr"),
        }
    }

    fn pbx() -> SocketAddr {
        PBX.parse().expect("addr")
    }

    /// The datagrams sent and the events emitted.
    fn split(out: Vec<Output>) -> (Vec<String>, Vec<CallEvent>) {
        let mut sent = Vec::new();
        let mut events = Vec::new();
        for o in out {
            match o {
                Output::Send { bytes, .. } => sent.push(String::from_utf8(bytes).expect("utf-8")),
                Output::Events(e) => events.extend(e),
            }
        }
        (sent, events)
    }

    fn get<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
        msg.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// A response to `req` with a To tag and extra header lines.
    fn response(req: &str, code: u16, extra: &str) -> Vec<u8> {
        let copy: String = req
            .lines()
            .filter(|l| {
                ["Via:", "From:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
            })
            .map(|l| format!("{l}\r\n"))
            .collect();
        let to = get(req, "To").expect("To");
        let to = if to.contains("tag=") {
            to.to_owned()
        } else {
            format!("{to};tag=pbxtag")
        };
        format!("SIP/2.0 {code} Whatever\r\n{copy}To: {to}\r\n{extra}Content-Length: 0\r\n\r\n")
            .into_bytes()
    }

    fn notify(sub_req: &str, cseq: u32, state: &str, body: &str) -> Vec<u8> {
        let call_id = get(sub_req, "Call-ID").expect("Call-ID");
        let from = get(sub_req, "From").expect("From");
        let ctype = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/dialog-info+xml\r\n".into()
        };
        format!(
            "NOTIFY sip:screenpop@192.0.2.9:5070 SIP/2.0\r\nVia: SIP/2.0/UDP {PBX};branch=z9hG4bKn{cseq}\r\n\
             From: <sip:1001@pbx.test>;tag=pbxtag\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\n\
             Contact: <sip:192.0.2.5:5060>\r\nEvent: dialog\r\nSubscription-State: {state}\r\n{ctype}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn doc(version: u64, state: &str, dialog_state: &str) -> String {
        format!(
            r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="{state}" entity="sip:1001@pbx.test"><dialog id="d1" call-id="c1" direction="recipient"><state>{dialog_state}</state><remote><identity>sip:+14155550100@carrier</identity></remote></dialog></dialog-info>"#
        )
    }

    /// Subscribed through a 407 challenge and granted 120 s.
    fn subscribed(now: Instant) -> (Subscriber, String) {
        let mut s = Subscriber::new(settings(), now);
        let (sent, _) = split(s.take());
        let first = sent[0].clone();
        s.on_datagram(
            &response(
                &first,
                407,
                "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"\r\n",
            ),
            pbx(),
            now,
        );
        let (sent, _) = split(s.take());
        let authed = sent[0].clone();
        s.on_datagram(
            &response(
                &authed,
                200,
                "Expires: 120\r\nContact: <sip:192.0.2.5:5060>\r\n",
            ),
            pbx(),
            now,
        );
        assert_eq!(s.active(), 1);
        (s, authed)
    }

    #[test]
    fn subscribes_answers_the_challenge_and_refreshes_at_80_percent() {
        let now = Instant::now();
        let mut s = Subscriber::new(settings(), now);
        let (sent, _) = split(s.take());
        assert_eq!(sent.len(), 1);
        let first = &sent[0];
        assert!(
            first.starts_with("SUBSCRIBE sip:1001@pbx.test SIP/2.0\r\n"),
            "{first}"
        );
        assert_eq!(get(first, "Event"), Some("dialog"));
        assert_eq!(get(first, "Accept"), Some("application/dialog-info+xml"));
        assert_eq!(get(first, "Expires"), Some("120"));
        assert_eq!(
            get(first, "Contact"),
            Some("<sip:screenpop@192.0.2.9:5070>")
        );
        assert!(get(first, "Proxy-Authorization").is_none());
        s.on_datagram(
            &response(
                first,
                407,
                "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"\r\n",
            ),
            pbx(),
            now,
        );
        let (sent, _) = split(s.take());
        let authed = &sent[0];
        assert_eq!(get(authed, "CSeq"), Some("2 SUBSCRIBE"));
        assert_eq!(get(authed, "Call-ID"), get(first, "Call-ID"));
        let credentials = get(authed, "Proxy-Authorization").expect("answered");
        let cnonce = credentials
            .split("cnonce=\"")
            .nth(1)
            .and_then(|c| c.split('"').next())
            .expect("cnonce");
        let want = Challenge::parse(b"Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"")
            .expect("valid")
            .answer(
                "screenpop",
                "s3cret",
                "SUBSCRIBE",
                "sip:1001@pbx.test",
                1,
                cnonce,
            );
        assert_eq!(credentials, want);
        s.on_datagram(
            &response(
                authed,
                200,
                "Expires: 100\r\nContact: <sip:192.0.2.5:5060>\r\n",
            ),
            pbx(),
            now,
        );
        assert_eq!(s.active(), 1);
        assert_eq!(
            s.next_deadline(),
            Some(now + Duration::from_secs(80)),
            "80 % of the granted 100 s"
        );
        s.on_timer(now + Duration::from_secs(80));
        let (sent, _) = split(s.take());
        let refresh = &sent[0];
        assert!(
            refresh.starts_with("SUBSCRIBE sip:192.0.2.5:5060 SIP/2.0"),
            "{refresh}"
        );
        assert_eq!(get(refresh, "CSeq"), Some("3 SUBSCRIBE"));
        assert!(get(refresh, "To").is_some_and(|t| t.ends_with(";tag=pbxtag")));
        assert!(
            get(refresh, "Proxy-Authorization").is_some_and(|a| a.contains("nc=00000002")),
            "{refresh}"
        );
    }

    #[test]
    fn notifies_are_answered_and_mapped_in_version_order() {
        let now = Instant::now();
        let (mut s, req) = subscribed(now);
        s.on_datagram(
            &notify(&req, 1, "active;expires=119", &doc(5, "full", "early")),
            pbx(),
            now,
        );
        let (sent, events) = split(s.take());
        assert!(sent[0].starts_with("SIP/2.0 200 OK"), "{}", sent[0]);
        assert!(
            matches!(&events[..], [CallEvent::Ringing { key, extension, caller, .. }]
                if key == "kam:c1" && extension == "1001" && caller.number.as_deref() == Some("+14155550100")),
            "{events:?}"
        );
        // A retransmission of the same NOTIFY: answered again, applied once.
        s.on_datagram(
            &notify(&req, 1, "active;expires=119", &doc(5, "full", "early")),
            pbx(),
            now,
        );
        let (sent, events) = split(s.take());
        assert!(sent[0].starts_with("SIP/2.0 200") && events.is_empty());
        // An older version under a newer CSeq is dropped.
        s.on_datagram(
            &notify(&req, 2, "active", &doc(4, "full", "terminated")),
            pbx(),
            now,
        );
        assert!(split(s.take()).1.is_empty());
        s.on_datagram(
            &notify(&req, 3, "active", &doc(6, "full", "confirmed")),
            pbx(),
            now,
        );
        let (_, events) = split(s.take());
        assert!(
            matches!(&events[..], [CallEvent::Answered { .. }]),
            "{events:?}"
        );
        s.on_datagram(
            &notify(&req, 4, "active", &doc(7, "partial", "terminated")),
            pbx(),
            now,
        );
        let (_, events) = split(s.take());
        assert!(
            matches!(
                &events[..],
                [CallEvent::Ended {
                    reason: EndReason::Completed,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn a_partial_document_after_a_gap_asks_for_full_state() {
        let now = Instant::now();
        let (mut s, req) = subscribed(now);
        s.on_datagram(
            &notify(&req, 1, "active", &doc(1, "full", "early")),
            pbx(),
            now,
        );
        s.take();
        s.on_datagram(
            &notify(&req, 2, "active", &doc(3, "partial", "confirmed")),
            pbx(),
            now,
        );
        let (_, events) = split(s.take());
        assert!(
            matches!(&events[..], [CallEvent::Answered { .. }]),
            "applied anyway"
        );
        assert_eq!(s.next_deadline(), Some(now), "a refresh is due at once");
        s.on_timer(now);
        let (sent, _) = split(s.take());
        assert!(sent[0].starts_with("SUBSCRIBE "), "{sent:?}");
    }

    #[test]
    fn strangers_and_other_packages_are_refused() {
        let now = Instant::now();
        let (mut s, req) = subscribed(now);
        let stranger = String::from_utf8(notify(&req, 1, "active", ""))
            .expect("utf-8")
            .replace(get(&req, "Call-ID").expect("id"), "forged@elsewhere");
        s.on_datagram(stranger.as_bytes(), pbx(), now);
        let (sent, _) = split(s.take());
        assert!(sent[0].starts_with("SIP/2.0 481"), "{}", sent[0]);
        let presence = String::from_utf8(notify(&req, 1, "active", ""))
            .expect("utf-8")
            .replace("Event: dialog", "Event: presence");
        s.on_datagram(presence.as_bytes(), pbx(), now);
        let (sent, _) = split(s.take());
        assert!(sent[0].starts_with("SIP/2.0 489"), "{}", sent[0]);
        s.on_datagram(b"\x00\x01garbage", pbx(), now);
        s.on_datagram(
            &notify(&req, 2, "active", "<dialog-info version='x'"),
            pbx(),
            now,
        );
        let (sent, events) = split(s.take());
        assert!(
            sent[0].starts_with("SIP/2.0 200"),
            "an unreadable body is still answered"
        );
        assert!(events.is_empty());
        assert_eq!(s.active(), 1, "nothing of that ends the subscription");
    }

    #[test]
    fn terminated_subscriptions_come_back_honouring_retry_after() {
        let now = Instant::now();
        let (mut s, req) = subscribed(now);
        s.on_datagram(
            &notify(&req, 1, "terminated;reason=probation;retry-after=30", ""),
            pbx(),
            now,
        );
        assert_eq!(s.active(), 0);
        s.take();
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(30)));
        s.on_timer(now + Duration::from_secs(30));
        let (sent, _) = split(s.take());
        assert!(
            sent[0].starts_with("SUBSCRIBE sip:1001@pbx.test"),
            "{sent:?}"
        );
        assert_ne!(
            get(&sent[0], "Call-ID"),
            get(&req, "Call-ID"),
            "a new subscription"
        );
        assert!(get(&sent[0], "To").is_some_and(|t| !t.contains("tag=")));

        let (mut s, req) = subscribed(now);
        s.on_datagram(
            &notify(&req, 1, "terminated;reason=timeout", ""),
            pbx(),
            now,
        );
        s.take();
        assert_eq!(
            s.next_deadline(),
            Some(now),
            "timeout: subscribe again at once"
        );
    }

    #[test]
    fn retransmits_then_gives_up_and_backs_off() {
        let now = Instant::now();
        let mut s = Subscriber::new(settings(), now);
        let (sent, _) = split(s.take());
        let call_id = get(&sent[0], "Call-ID").expect("id").to_owned();
        s.on_timer(now + T1);
        assert_eq!(split(s.take()).0.len(), 1, "first retransmission after T1");
        assert_eq!(s.next_deadline(), Some(now + T1 * 3), "then after 2·T1");
        s.on_timer(now + TIMER_F);
        assert!(split(s.take()).0.is_empty());
        let retry = s.next_deadline().expect("a retry is scheduled");
        let delay = retry - (now + TIMER_F);
        assert!(
            delay >= Duration::from_millis(500) && delay <= Duration::from_millis(1000),
            "retry_min with equal jitter: {delay:?}"
        );
        s.on_timer(retry);
        let (sent, _) = split(s.take());
        assert_ne!(get(&sent[0], "Call-ID"), Some(call_id.as_str()));
    }

    #[test]
    fn wrong_credentials_are_not_retried_in_a_loop() {
        let now = Instant::now();
        let mut s = Subscriber::new(settings(), now);
        let challenge = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n";
        let (sent, _) = split(s.take());
        s.on_datagram(&response(&sent[0], 401, challenge), pbx(), now);
        let (sent, _) = split(s.take());
        assert!(get(&sent[0], "Authorization").is_some());
        s.on_datagram(&response(&sent[0], 401, challenge), pbx(), now);
        let (sent, _) = split(s.take());
        assert!(
            sent.is_empty(),
            "the same nonce refused again: give up for now"
        );
        assert!(
            s.next_deadline()
                .is_some_and(|d| d >= now + Duration::from_millis(500))
        );
        // A stale nonce is answered again at once.
        let mut s = Subscriber::new(settings(), now);
        let (sent, _) = split(s.take());
        s.on_datagram(&response(&sent[0], 401, challenge), pbx(), now);
        let (sent, _) = split(s.take());
        let stale = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", stale=true\r\n";
        s.on_datagram(&response(&sent[0], 401, stale), pbx(), now);
        assert_eq!(split(s.take()).0.len(), 1);
    }

    #[test]
    fn a_refresh_refused_with_481_subscribes_anew_and_expiry_too() {
        let now = Instant::now();
        let (mut s, _) = subscribed(now);
        let at = now + Duration::from_secs(96);
        s.on_timer(at);
        let (sent, _) = split(s.take());
        s.on_datagram(&response(&sent[0], 481, ""), pbx(), at);
        let (sent, _) = split(s.take());
        assert!(
            sent[0].starts_with("SUBSCRIBE sip:1001@pbx.test"),
            "{sent:?}"
        );
        assert!(get(&sent[0], "To").is_some_and(|t| !t.contains("tag=")));

        // A refresh that keeps failing (1xx only) lets the subscription expire: start over.
        let (mut s, _) = subscribed(now);
        s.on_timer(at);
        let (sent, _) = split(s.take());
        s.on_datagram(&response(&sent[0], 100, ""), pbx(), at);
        s.on_timer(at + TIMER_F);
        assert_eq!(s.active(), 0);
        assert!(
            s.next_deadline().is_some(),
            "a new subscription is scheduled"
        );
    }

    #[test]
    fn a_notify_that_overtakes_the_2xx_establishes_the_dialog() {
        let now = Instant::now();
        let mut s = Subscriber::new(settings(), now);
        let (sent, _) = split(s.take());
        s.on_datagram(
            &notify(&sent[0], 1, "active;expires=120", &doc(1, "full", "early")),
            pbx(),
            now,
        );
        let (answers, events) = split(s.take());
        assert!(answers[0].starts_with("SIP/2.0 200"));
        assert_eq!(events.len(), 1);
        s.on_datagram(&response(&sent[0], 200, "Expires: 120\r\n"), pbx(), now);
        assert_eq!(s.active(), 1);
    }

    #[test]
    fn shutdown_unsubscribes() {
        let now = Instant::now();
        let (mut s, _) = subscribed(now);
        s.shutdown(now);
        let (sent, _) = split(s.take());
        assert_eq!(get(&sent[0], "Expires"), Some("0"));
        assert_eq!(s.active(), 0);
    }

    #[test]
    fn subscription_state_values() {
        let s = sub_state(b"terminated;reason=Rejected ; retry-after=20");
        assert_eq!(s.state, "terminated");
        assert_eq!(s.reason.as_deref(), Some("rejected"));
        assert_eq!(s.retry_after, Some(20));
        let s = sub_state(b"ACTIVE;expires=3599");
        assert_eq!((s.state.as_str(), s.expires), ("active", Some(3599)));
        assert_eq!(seconds(b" 3600 "), Some(3600));
        assert_eq!(seconds(b"120 (lunch)"), Some(120));
        assert_eq!(seconds(b"x"), None);
    }
}
