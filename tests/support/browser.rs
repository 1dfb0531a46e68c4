//! A real headless Chromium for the page tests, driven over WebDriver (fantoccini).
//!
//! One chromedriver per test binary, on a free loopback port, started on first use. It is
//! started through a small shell watchdog that holds a pipe from this process: when the test
//! binary exits (passed, failed or killed), the pipe closes and the watchdog ends chromedriver
//! by its PID and removes its log. Each browser session gets a fresh `--user-data-dir` and is closed by
//! [`Browser::close`] (chromedriver then ends that Chromium).
//!
//! Chromium missing is a failure, not a skip: the message says how to install it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "the browser tests need Debian's chromium and chromium-driver \
     (/usr/bin/chromium, /usr/bin/chromedriver): install them with \
     `apt-get install -y chromium chromium-driver` (.ci/run does this when they are missing)";

/// The running chromedriver.
pub struct Driver {
    pub url: String,
    /// The watchdog shell; its stdin is our end of the pipe.
    watchdog: Mutex<Child>,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A minimal blocking GET, for chromedriver's `/status` before any async client exists.
fn ready(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"ready\":true") || body.contains("\"ready\": true")
}

/// The binary's chromedriver, started on first use.
pub fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: {INSTALL}"
            );
        }
        let log = std::env::temp_dir().join(format!(
            "screenpop-chromedriver-{}.log",
            std::process::id()
        ));
        for _ in 0..5 {
            let port = free_port();
            // The watchdog: start chromedriver, then block reading our pipe; EOF (this process
            // is gone) ends chromedriver by its PID.
            let watchdog = Command::new("sh")
                .args([
                    "-c",
                    "\"$0\" --port=\"$1\" --allowed-ips=127.0.0.1 </dev/null >\"$2\" 2>&1 & pid=$!; cat >/dev/null; kill \"$pid\" 2>/dev/null; rm -f \"$2\"",
                    CHROMEDRIVER,
                    &port.to_string(),
                    &log.display().to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh runs");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut watchdog = watchdog;
            while Instant::now() < deadline {
                if ready(addr) {
                    return Driver {
                        url: format!("http://{addr}"),
                        watchdog: Mutex::new(watchdog),
                        log,
                    };
                }
                if let Ok(Some(_)) = watchdog.try_wait() {
                    break; // chromedriver exited (port taken?): try another port
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(watchdog.stdin.take()); // ends that chromedriver
            let _ = watchdog.wait();
        }
        let detail = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("chromedriver did not become ready: {detail}\n{INSTALL}");
    })
}

/// One browser session (a fresh profile).
pub struct Browser {
    pub client: Client,
    profile: PathBuf,
}

impl Browser {
    /// A headless Chromium with a `width`×`height` window.
    pub async fn open(width: u32, height: u32) -> Browser {
        let driver = driver();
        let profile =
            std::env::temp_dir().join(format!("screenpop-chromium-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-quic", "--disable-sync",
                    "--disable-dev-shm-usage", "--no-default-browser-check",
                    "--disable-features=Translate,MediaRouter,OptimizationHints",
                    "--autoplay-policy=no-user-gesture-required",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": { "profile.default_content_setting_values.notifications": 1 },
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&driver.url),
        )
        .await
        .expect("a Chromium session within 30 s")
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(&driver.log).unwrap_or_default();
            panic!("Chromium did not start: {e}\n{log}\n{INSTALL}")
        });
        // The viewport, not the window, is what the page sees: size it exactly.
        let _ = client.set_window_size(width, height).await;
        Browser { client, profile }
    }

    /// Runs `script` (a function body) and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `expression` every 50 ms until it is truthy; returns it. Panics after `limit`
    /// naming `what`, with the page's text for context.
    pub async fn until(&self, limit: Duration, what: &str, expression: &str) -> Value {
        let script = format!("return ({expression});");
        let started = Instant::now();
        loop {
            let v = self.client.execute(&script, Vec::new()).await;
            if let Ok(v) = &v
                && truthy(v)
            {
                return v.clone();
            }
            if started.elapsed() > limit {
                let page = self
                    .js("return document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "{what}: not within {limit:?} (last value {v:?})\n--- page text ---\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the first element matching `css`, or null.
    pub async fn text(&self, css: &str) -> Option<String> {
        let css = serde_json::to_string(css).expect("json");
        self.js(&format!(
            "const e = document.querySelector({css}); return e ? e.textContent : null;"
        ))
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Signs in on the page at `base` with `token` and waits until it is live.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.client.goto(base).await.expect("page loads");
        self.until(
            Duration::from_secs(5),
            "the sign-in form",
            "document.querySelector('#token') && !document.querySelector('#signin').hidden",
        )
        .await;
        let input = self
            .client
            .find(fantoccini::Locator::Css("#token"))
            .await
            .expect("token field");
        input.send_keys(token).await.expect("type the token");
        self.client
            .find(fantoccini::Locator::Css("#signin button[type=submit]"))
            .await
            .expect("sign-in button")
            .click()
            .await
            .expect("click sign in");
        self.until(
            Duration::from_secs(5),
            "connection live after sign-in",
            "document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;
    }

    /// Saves a screenshot of the viewport as a PNG.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The browsers a test opened; all closed by [`run`], also when the test panics.
#[derive(Clone, Default)]
pub struct Sessions {
    open: std::sync::Arc<Mutex<Vec<(Client, PathBuf)>>>,
}

impl Sessions {
    /// Opens a browser that [`run`] will close.
    pub async fn open(&self, width: u32, height: u32) -> Browser {
        let browser = Browser::open(width, height).await;
        self.open
            .lock()
            .expect("lock")
            .push((browser.client.clone(), browser.profile.clone()));
        browser
    }
}

/// Runs a browser test: every browser opened through the given [`Sessions`] is closed at the
/// end, whether the test passed or panicked (then the panic goes on).
pub async fn run<F, Fut>(test: F)
where
    F: FnOnce(Sessions) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::FutureExt;
    let sessions = Sessions::default();
    let outcome = std::panic::AssertUnwindSafe(test(sessions.clone()))
        .catch_unwind()
        .await;
    let open: Vec<_> = sessions.open.lock().expect("lock").drain(..).collect();
    for (client, profile) in open {
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        let _ = std::fs::remove_dir_all(&profile);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
