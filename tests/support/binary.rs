//! The release binary as IT runs it: `screenpop run --config FILE`, its addresses read from the
//! banner, its log collected, signalled and ended by its PID.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_screenpop");

/// One run of the release binary (`screenpop run`) on a config, its stderr collected.
pub struct Process {
    pub child: Child,
    /// Its SIP address (UDP), from the banner.
    pub sip: SocketAddr,
    /// Its first SIP-over-TLS address, from the banner, if it has one.
    pub sip_tls: Option<SocketAddr>,
    /// Its HTTP address, from the banner.
    pub http: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Starts it on `config` with `extra` arguments; returns once the banner named its
    /// addresses.
    pub fn start(config: &Path, extra: &[&OsStr]) -> Process {
        Process::start_logging(config, extra, "info")
    }

    /// [`Process::start`] with `SCREENPOP_LOG` set to `filter`.
    pub fn start_logging(config: &Path, extra: &[&OsStr], filter: &str) -> Process {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .args(extra)
            .env("SCREENPOP_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in stderr.lines().map_while(Result::ok) {
                    let mut log = log.lock().expect("log");
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut sip, mut http, mut sip_tls) = (None, None, None);
        let mut line = String::new();
        while sip.is_none() || http.is_none() {
            line.clear();
            let n = stdout.read_line(&mut line).expect("banner");
            assert!(n > 0, "no banner; log:\n{}", log.lock().expect("log"));
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["SIP", "udp", addr, rest @ ..] => {
                    sip = addr.trim_end_matches(',').parse().ok();
                    sip_tls = rest
                        .iter()
                        .skip_while(|w| **w != "tls")
                        .nth(1)
                        .and_then(|a| a.trim_end_matches(',').parse().ok());
                }
                ["HTTP", addr, ..] => http = addr.parse().ok(),
                _ => {}
            }
        }
        // Keep reading so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Process {
            child,
            sip: sip.expect("sip"),
            sip_tls,
            http: http.expect("http"),
            log,
        }
    }

    /// Sends a signal (`-TERM`, `-KILL`, `-HUP`) by its PID.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {signal}");
    }

    /// Waits (bounded) for the process to exit; its exit code (None: killed by a signal).
    pub async fn exited(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "did not exit within 15 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
