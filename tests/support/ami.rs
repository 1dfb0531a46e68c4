//! A fake Asterisk manager interface on 127.0.0.1:0 (plain or TLS) that checks the login and
//! the actions and answers Ping, CoreShowChannels, Originate and Logoff: for the AMI intake's
//! tests and `check-config --connect`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use screenpop::telephony::ami::AmiConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub const USER: &str = "screenpop";
pub const SECRET: &str = "s3cret";

/// LF → CRLF, as Asterisk writes.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

pub enum Cmd {
    Send(Vec<u8>),
    Drop,
    Silence,
}

/// How the fake server answers an `Originate`.
#[derive(Debug, Clone)]
pub enum Originated {
    Success,
    Error(&'static str),
    /// Closes the connection without an answer.
    Hangup,
}

/// What the fake server saw, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub logins: usize,
    pub resyncs: usize,
    pub pings: usize,
    /// Every `Originate`'s fields, in order.
    pub originates: Vec<Vec<(String, String)>>,
    /// Protocol violations: anything but Login first, a bad login, an unknown action.
    pub violations: Vec<String>,
}

pub struct FakeAmi {
    pub addr: std::net::SocketAddr,
    pub cmds: mpsc::Sender<Cmd>,
    pub seen: watch::Receiver<Seen>,
    pub channels: Arc<Mutex<Vec<u8>>>,
    pub originated: Arc<Mutex<Originated>>,
}

/// A connection to the fake server, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl FakeAmi {
    pub async fn start() -> FakeAmi {
        FakeAmi::start_with(None).await
    }

    /// The fake server, over TLS when given an acceptor (Asterisk's `tlsenable`).
    pub async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> FakeAmi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cmds, mut rx) = mpsc::channel::<Cmd>(16);
        let (seen_tx, seen) = watch::channel(Seen::default());
        let channels = Arc::new(Mutex::new(Vec::new()));
        let listed = channels.clone();
        let originated = Arc::new(Mutex::new(Originated::Success));
        let answer = originated.clone();
        tokio::spawn(async move {
            // One connection at a time, as the client makes them.
            while let Ok((stream, _)) = listener.accept().await {
                let stream: Box<dyn Io> = match &tls {
                    None => Box::new(stream),
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => Box::new(stream),
                        Err(_) => continue,
                    },
                };
                let (rd, mut wr) = tokio::io::split(stream);
                let mut rd = BufReader::new(rd);
                wr.write_all(b"Asterisk Call Manager/9.0.0\r\n")
                    .await
                    .expect("banner");
                let mut logged_in = false;
                let mut silent = false;
                let mut action: Vec<(String, String)> = Vec::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    tokio::select! {
                        cmd = rx.recv() => match cmd {
                            Some(Cmd::Send(bytes)) => { let _ = wr.write_all(&bytes).await; }
                            Some(Cmd::Drop) | None => break,
                            Some(Cmd::Silence) => silent = true,
                        },
                        read = rd.read_line(&mut line) => {
                            if read.unwrap_or(0) == 0 {
                                break;
                            }
                            let l = line.trim_end_matches(['\r', '\n']);
                            if !l.is_empty() {
                                if let Some((k, v)) = l.split_once(": ") {
                                    action.push((k.to_owned(), v.to_owned()));
                                }
                                continue;
                            }
                            let get = |k: &str| action.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or("");
                            let id = get("ActionID").to_owned();
                            let name = get("Action").to_owned();
                            let mut reply = String::new();
                            match name.as_str() {
                                "Login" => {
                                    let ok = get("Username") == USER && get("Secret") == SECRET
                                        && get("Events").split(',').any(|c| c == "call");
                                    seen_tx.send_modify(|s| {
                                        s.logins += 1;
                                        if !ok { s.violations.push(format!("bad login {action:?}")); }
                                    });
                                    if ok {
                                        logged_in = true;
                                        reply = format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\nEvent: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n");
                                    } else {
                                        reply = format!("Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n");
                                    }
                                }
                                _ if !logged_in => {
                                    seen_tx.send_modify(|s| s.violations.push(format!("{name} before Login")));
                                    reply = format!("Response: Error\r\nActionID: {id}\r\nMessage: Permission denied\r\n\r\n");
                                }
                                "Ping" => {
                                    seen_tx.send_modify(|s| s.pings += 1);
                                    if !silent {
                                        reply = format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1731000000.000000\r\n\r\n");
                                    }
                                }
                                "CoreShowChannels" => {
                                    let items = listed.lock().expect("lock").clone();
                                    let items = String::from_utf8_lossy(&crlf(&items)).replace("{ACTIONID}", &id);
                                    let n = items.matches("Event: CoreShowChannel\r\n").count();
                                    reply = format!("Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n{items}Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {n}\r\n\r\n");
                                    seen_tx.send_modify(|s| s.resyncs += 1);
                                }
                                "Originate" => {
                                    let how = answer.lock().expect("lock").clone();
                                    seen_tx.send_modify(|s| {
                                        s.originates.push(action.clone());
                                        if !id.starts_with("screenpop-dial-") {
                                            s.violations.push(format!("Originate ActionID {id:?}"));
                                        }
                                    });
                                    match how {
                                        Originated::Success => reply = format!("Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n"),
                                        Originated::Error(why) => reply = format!("Response: Error\r\nActionID: {id}\r\nMessage: {why}\r\n\r\n"),
                                        Originated::Hangup => break,
                                    }
                                }
                                "Logoff" => {
                                    reply = format!("Response: Goodbye\r\nActionID: {id}\r\nMessage: Thanks for all the fish.\r\n\r\n");
                                }
                                other => {
                                    seen_tx.send_modify(|s| s.violations.push(format!("unexpected action {other}")));
                                    reply = format!("Response: Error\r\nActionID: {id}\r\nMessage: Invalid/unknown command\r\n\r\n");
                                }
                            }
                            action.clear();
                            if !reply.is_empty() && wr.write_all(reply.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        FakeAmi {
            addr,
            cmds,
            seen,
            channels,
            originated,
        }
    }

    pub fn config(&self) -> AmiConfig {
        let mut c = AmiConfig::new("pbx1", &self.addr.to_string(), USER, SECRET);
        c.reconnect_min = Duration::from_millis(50);
        c.reconnect_max = Duration::from_millis(200);
        c
    }

    pub async fn send(&self, bytes: Vec<u8>) {
        self.cmds.send(Cmd::Send(bytes)).await.expect("server");
    }

    /// Waits (at most 5 s) until the server has seen what `done` wants.
    pub async fn wait(&mut self, done: impl Fn(&Seen) -> bool) -> Seen {
        let seen = tokio::time::timeout(Duration::from_secs(5), self.seen.wait_for(done))
            .await
            .expect("the fake AMI server saw it within 5 s")
            .expect("server alive");
        seen.clone()
    }

    pub fn assert_clean(&self) {
        let seen = self.seen.borrow();
        assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    }
}
