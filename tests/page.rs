//! The agent page in a real browser: headless Chromium driven over WebDriver (fantoccini,
//! `tests/support/browser.rs`) against the real daemon on loopback, rung with real SIP
//! INVITEs. Also the page's HTTP surface without a browser: headers, assets, the journal API.
//!
//! The profile sections are rendered against the protocol's spec by a scripted push server
//! (the page's own assets, a `/ws` that plays spec messages), independent of the composer.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::Sessions;
use screenpop::push::message::PageSettings;
use serde_json::{Value, json};
use support::{UdpPeer, http_get, http_request};

/// Browsers running at once in this binary (two cores: more only adds flakiness).
static BROWSER_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

const SHORT: Duration = Duration::from_secs(5);

/// Where screenshots go: `target/screenshots/`, or README's `docs/screenshots/` with
/// `SCREENPOP_UPDATE_SCREENSHOTS=1` (so that a test run leaves the work tree clean).
fn screenshots() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("SCREENPOP_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    }
}

// ---- a real SIP caller -------------------------------------------------------------------

/// One call placed at the daemon's SIP listener over UDP, step by step.
struct SipCall {
    peer: UdpPeer,
    ext: String,
    call_id: String,
    branch: String,
    number: String,
    display: String,
}

impl SipCall {
    fn request(&self, method: &str, branch: &str, cseq: u32, extra: &str) -> Vec<u8> {
        let local = self.peer.local();
        let body = if method == "INVITE" {
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_owned()
        } else {
            String::new()
        };
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:{ext}@screenpop.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};rport;branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: \"{display}\" <sip:{number}@pbx.test>;tag=page-test\r\n\
             To: <sip:{ext}@pbx.test>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             {extra}{content_type}Content-Length: {len}\r\n\r\n{body}",
            ext = self.ext,
            display = self.display,
            number = self.number,
            call_id = self.call_id,
            len = body.len(),
        )
        .into_bytes()
    }

    /// Sends the INVITE and waits for 100 Trying.
    async fn invite(sip: SocketAddr, ext: &str, number: &str, display: &str) -> SipCall {
        let call = SipCall {
            peer: UdpPeer::new(sip).await,
            ext: ext.into(),
            call_id: format!("{:016x}@page-test", rand::random::<u64>()),
            branch: format!("z9hG4bK{:016x}", rand::random::<u64>()),
            number: number.into(),
            display: display.into(),
        };
        let pai = format!("P-Asserted-Identity: \"{display}\" <sip:{number}@pbx.test>\r\n");
        call.peer
            .send(&call.request("INVITE", &call.branch, 1, &pai))
            .await;
        let trying = call.peer.expect().await;
        assert_eq!(trying.code, 100, "{}", trying.raw);
        call
    }

    /// CANCEL with `Reason: SIP;cause=200` (another phone answered): 200, then 487 (ACKed).
    async fn answered(&self) {
        let reason = "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n";
        self.peer
            .send(&self.request("CANCEL", &self.branch, 1, reason))
            .await;
        self.finish_invite().await;
    }

    /// A plain CANCEL: the caller hung up while it rang.
    async fn cancel(&self) {
        self.peer
            .send(&self.request("CANCEL", &self.branch, 1, ""))
            .await;
        self.finish_invite().await;
    }

    async fn finish_invite(&self) {
        let mut codes = Vec::new();
        while codes.len() < 2 {
            let r = self.peer.expect().await;
            codes.push(r.code);
            if r.code == 487 {
                let ack = format!(
                    "ACK sip:{ext}@screenpop.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch={branch}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:{number}@pbx.test>;tag=page-test\r\nTo: {to}\r\n\
                     Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    ext = self.ext,
                    local = self.peer.local(),
                    branch = self.branch,
                    number = self.number,
                    to = r.to,
                    call_id = self.call_id,
                );
                self.peer.send(ack.as_bytes()).await;
            }
        }
        codes.sort_unstable();
        assert_eq!(codes, [200, 487]);
    }

    /// BYE: the answered call is over (the fork target answers 481: it holds no dialog).
    async fn bye(&self) {
        let branch = format!("z9hG4bK{:016x}", rand::random::<u64>());
        self.peer.send(&self.request("BYE", &branch, 2, "")).await;
        let r = self.peer.expect().await;
        assert_eq!(r.code, 481, "{}", r.raw);
    }
}

fn base(http: SocketAddr) -> String {
    format!("http://{http}/")
}

/// The card of the only call with this display/number, as a JS expression prefix.
const CARD: &str = "document.querySelector('article.card')";

// ---- the page's HTTP surface, no browser --------------------------------------------------

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_immutable_versioned_assets() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let (status, head, body) = http_request(http, "GET", "/", None, None).await;
    assert_eq!(status, 200);
    assert!(head.contains("cache-control: no-cache"), "{head}");
    let csp = head
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    for name in ["app.js", "app.css", "icon.svg"] {
        let path = screenpop::web::page::asset_path(name).expect("asset");
        assert!(body.contains(&path), "{path} linked from /");
        let (status, head, _) = http_request(http, "GET", &path, None, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            head.contains("cache-control: public, max-age=31536000, immutable"),
            "{head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    }
    assert!(body.contains("<script src=\"/assets/app."), "{body}");
    let (status, _, _) = http_request(http, "GET", "/assets/app.js", None, None).await;
    assert_eq!(status, 404, "only versioned names are served");
    let (status, _, _) = http_request(http, "GET", "/assets/app.0000000000.js", None, None).await;
    assert_eq!(status, 404, "an old version is gone");
    daemon.stop().await;
}

#[tokio::test]
async fn the_notes_api_checks_the_agent_the_call_and_the_sizes() {
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let sip = daemon.bound.sip_udp[0];
    let mut updates = daemon.calls.subscribe();
    let call = SipCall::invite(sip, "1001", "+14155550100", "Acme Front Desk").await;
    let id = support::next_update(&mut updates, support::is_ringing)
        .await
        .call
        .id
        .clone();
    call.cancel().await;
    let path = format!("/api/calls/{id}/notes");
    let note =
        json!({"note": "Asked about invoice INV-10231", "disposition": "Callback"}).to_string();

    let post = |token: Option<&'static str>, body: String, path: String| async move {
        http_request(http, "POST", &path, token, Some(&body)).await
    };
    assert_eq!(post(None, note.clone(), path.clone()).await.0, 401);
    assert_eq!(
        post(Some("bob-demo-token"), note.clone(), path.clone())
            .await
            .0,
        404,
        "bob's extension never rang: not his call"
    );
    assert_eq!(
        post(
            Some("alice-demo-token"),
            note.clone(),
            "/api/calls/nope/notes".into()
        )
        .await
        .0,
        404
    );
    let bad = json!({"note": "x", "disposition": "Frobnicated"}).to_string();
    assert_eq!(
        post(Some("alice-demo-token"), bad, path.clone()).await.0,
        422
    );
    let long = json!({"note": "x".repeat(4001)}).to_string();
    assert_eq!(
        post(Some("alice-demo-token"), long, path.clone()).await.0,
        413
    );
    let huge = json!({"note": "é".repeat(30_000)}).to_string();
    assert_eq!(
        post(Some("alice-demo-token"), huge, path.clone()).await.0,
        413
    );
    assert_eq!(
        post(
            Some("alice-demo-token"),
            "{\"nope\":1}".into(),
            path.clone()
        )
        .await
        .0,
        400
    );
    let (status, _, body) = post(Some("alice-demo-token"), note, path).await;
    assert_eq!(status, 200, "{body}");
    let saved: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(saved["note"], "Asked about invoice INV-10231");
    assert_eq!(saved["disposition"], "Callback");
    assert_eq!(saved["noted_by"], "alice");

    let (status, body) = http_get(http, "/api/calls?mine=1", Some("alice-demo-token")).await;
    assert_eq!(status, 200);
    let mine: Value = serde_json::from_str(&body).expect("json");
    let first = &mine["calls"][0];
    assert_eq!(first["call_id"], id.as_str());
    assert_eq!(first["customer"]["name"], "Acme Corporation");
    assert_eq!(first["outcome"], "cancelled");
    assert_eq!(first["disposition"], "Callback");
    let (_, body) = http_get(http, "/api/calls?mine=1", Some("bob-demo-token")).await;
    let bobs: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(bobs["calls"], json!([]), "bob sees none of alice's calls");
    // The live-calls API is unchanged.
    let (status, body) = http_get(http, "/api/calls", Some("alice-demo-token")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["calls"],
        json!([])
    );
    daemon.stop().await;
}

// ---- in the browser --------------------------------------------------------------------------

#[tokio::test]
async fn a_ring_pops_for_alice_only_then_answered_ended_and_noted() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let sip = daemon.bound.sip_udp[0];
    let journal = daemon.journal.clone();
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 900).await;
        let bob = sessions.open(1280, 900).await;
        alice.sign_in(&base(http), "alice-demo-token").await;
        bob.sign_in(&base(http), "bob-demo-token").await;
        assert_eq!(
            alice.text("#who").await.as_deref(),
            Some("Alice Agent · ext 1001")
        );

        // As if the tab were in the background: the page should notify and ring. The
        // notification and the oscillators are recorded by stand-ins (headless Chromium shows
        // no notifications and plays no sound), the rest is the page's own code.
        alice
            .js("Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
                 window.__notifications = [];
                 window.Notification = class {
                   static get permission() { return 'granted'; }
                   constructor(title, options) { window.__notifications.push([title, options.body, options.tag]); }
                   addEventListener() {}
                   close() {}
                 };
                 window.__oscillators = 0;
                 const create = AudioContext.prototype.createOscillator;
                 AudioContext.prototype.createOscillator = function () {
                   window.__oscillators += 1;
                   return create.call(this);
                 };")
            .await;
        let rang = Instant::now();
        let call = SipCall::invite(sip, "1001", "+14155550100", "Acme Front Desk").await;
        alice
            .until(
                SHORT,
                "alice's card names Acme",
                &format!(
                    "{CARD} && {CARD}.querySelector('.name').textContent === 'Acme Corporation'"
                ),
            )
            .await;
        let pop_ms = rang.elapsed().as_millis();
        eprintln!("INVITE sent → card visible in alice's browser: {pop_ms} ms");
        let card = alice
            .js(&format!(
                "const c = {CARD}; return {{
                    state: c.dataset.state,
                    badge: c.querySelector('[data-role=state]').textContent,
                    number: c.querySelector('[data-role=number]').textContent,
                    display: c.querySelector('.display').textContent,
                    company: c.querySelector('[data-role=company]').textContent,
                    crm: c.querySelector('[data-role=crm]').href,
                    title: document.title,
                    announced: document.querySelector('#announce').textContent,
                }};"
            ))
            .await;
        assert_eq!(card["state"], "ringing", "{card}");
        assert_eq!(card["badge"], "Ringing");
        assert_eq!(card["number"], "+1 415 555 0100");
        assert_eq!(card["display"], "Acme Front Desk");
        assert_eq!(card["company"], "Account ACME-001");
        assert_eq!(card["crm"], "https://crm.example/customers/c-0001");
        assert!(
            card["title"]
                .as_str()
                .is_some_and(|t| t.contains("Acme Corporation")),
            "{card}"
        );
        assert_eq!(
            card["announced"],
            "Incoming call from Acme Corporation, +1 415 555 0100"
        );
        // The demo's three sources answer: each section is rendered as the protocol says
        // (alice has the `credit` role), then `complete`.
        alice
            .until(
                SHORT,
                "balance, purchases, credit and history sections, complete",
                &format!(
                    "['balance', 'purchases', 'credit', 'history'].every((n) => {CARD}.querySelector('[data-section=' + n + '][data-status=ok]'))
                     && !{CARD}.querySelector('.loading')"
                ),
            )
            .await;
        let sections = alice
            .js(&format!(
                "const c = {CARD}; const s = (n) => c.querySelector('[data-section=' + n + ']');
                 return {{
                   balance: s('balance').querySelector('.facts').textContent,
                   purchases: s('purchases').querySelectorAll('tbody tr').length,
                   credit: s('credit').querySelector('.facts').textContent,
                   history: s('history').querySelector('[data-role=counts]').textContent,
                   titles: [...c.querySelectorAll('.section h3 span:first-child')].map((t) => t.textContent).sort(),
                 }};"
            ))
            .await;
        assert!(
            sections["balance"]
                .as_str()
                .is_some_and(|b| b.starts_with("Balance$") && b.contains("Overdue")),
            "{sections}"
        );
        assert!(sections["purchases"].as_u64().is_some_and(|n| n >= 1), "{sections}");
        assert_eq!(
            sections["history"], "0 earlier in 24 h · 0 in 7 days",
            "a first call: {sections}"
        );
        assert!(
            sections["credit"]
                .as_str()
                .is_some_and(|c| c.contains("Credit limit") && c.contains("Terms")),
            "{sections}"
        );
        assert_eq!(
            sections["titles"],
            json!(["Balance", "Credit terms", "History", "Recent purchases"])
        );
        let alerted = alice
            .js("return { notifications: window.__notifications, oscillators: window.__oscillators }")
            .await;
        assert_eq!(
            alerted["notifications"][0][0], "Incoming call: Acme Corporation",
            "{alerted}"
        );
        assert_eq!(
            alerted["notifications"][0][1],
            "+1 415 555 0100 · Acme Front Desk"
        );
        assert_eq!(
            alerted["oscillators"], 2,
            "one ring burst of 440 + 480 Hz, synthesised: {alerted}"
        );
        alice
            .js("delete document.hidden; document.dispatchEvent(new Event('visibilitychange'));")
            .await;
        // Bob's page got nothing, though it is connected and live.
        let bobs = bob
            .js(
                "return { cards: document.querySelectorAll('article.card').length,
                          idle: !document.querySelector('#idle').hidden,
                          live: document.querySelector('#conn').dataset.state }",
            )
            .await;
        assert_eq!(bobs, json!({"cards": 0, "idle": true, "live": "live"}));

        // Answered (the PBX cancels our fork branch with cause 200), then hung up.
        call.answered().await;
        alice
            .until(
                SHORT,
                "card answered",
                &format!("{CARD}.dataset.state === 'answered'"),
            )
            .await;
        assert_eq!(
            alice.text("[data-role=state]").await.as_deref(),
            Some("Answered")
        );
        call.bye().await;
        alice
            .until(
                SHORT,
                "card ended",
                &format!("{CARD}.dataset.state === 'ended'"),
            )
            .await;
        assert_eq!(
            alice.text("[data-role=state]").await.as_deref(),
            Some("Call ended")
        );
        assert_eq!(alice.js("return document.title").await, "screenpop");

        // The note and disposition, typed and saved like an agent would.
        let form = alice
            .client
            .find(fantoccini::Locator::Css("article.card form.notes"))
            .await
            .expect("notes form on the ended card");
        form.find(fantoccini::Locator::Css("textarea"))
            .await
            .expect("textarea")
            .send_keys("Wants the <b>invoice</b> resent & a callback Tuesday")
            .await
            .expect("type");
        form.find(fantoccini::Locator::Css("select"))
            .await
            .expect("select")
            .select_by_value("Callback")
            .await
            .expect("choose");
        form.find(fantoccini::Locator::Css("button[type=submit]"))
            .await
            .expect("save")
            .click()
            .await
            .expect("click save");
        alice
            .until(
                SHORT,
                "saved",
                &format!("{CARD}.querySelector('.save-status').textContent.startsWith('Saved')"),
            )
            .await;
        alice
            .until(
                SHORT,
                "the note in recent calls",
                "document.querySelector('#recent-list [data-role=note]')",
            )
            .await;
        assert_eq!(
            alice.text("#recent-list [data-role=note]").await.as_deref(),
            Some("Wants the <b>invoice</b> resent & a callback Tuesday")
        );
        assert_eq!(
            alice
                .text("#recent-list [data-role=disposition]")
                .await
                .as_deref(),
            Some("Callback")
        );
        let alice_agent = screenpop::agents::Agent {
            id: "alice".into(),
            name: "Alice Agent".into(),
            extensions: vec!["1001".into()],
            roles: vec!["credit".into()],
        };
        let journaled = journal.recent(&alice_agent, 1);
        assert_eq!(journaled[0].disposition.as_deref(), Some("Callback"));
        assert_eq!(journaled[0].outcome, Some("completed"));
        let (_, body) = http_get(http, "/api/calls?mine=1", Some("alice-demo-token")).await;
        assert!(body.contains("Wants the <b>invoice</b>"), "{body}");

        // Dismissed by keyboard: focus the card's dismiss button and press Enter.
        alice
            .js("document.querySelector('article.card .dismiss').focus()")
            .await;
        alice
            .client
            .active_element()
            .await
            .expect("focused")
            .send_keys(fantoccini::key::Key::Enter.to_string().as_str())
            .await
            .expect("enter");
        alice
            .until(
                SHORT,
                "card dismissed",
                "!document.querySelector('article.card')",
            )
            .await;
        let bobs_cards = bob
            .js("return document.querySelectorAll('article.card').length")
            .await;
        assert_eq!(bobs_cards, 0);

        // The call is still in "Recent calls": its note is edited there, by keyboard.
        alice
            .js("document.querySelector('#recent-list details summary').focus()")
            .await;
        let enter = fantoccini::key::Key::Enter.to_string();
        alice
            .client
            .active_element()
            .await
            .expect("summary focused")
            .send_keys(&enter)
            .await
            .expect("open");
        let text = alice
            .client
            .find(fantoccini::Locator::Css("#recent-list details[open] textarea"))
            .await
            .expect("the note in the list");
        text.clear().await.expect("clear");
        text.send_keys("Called back: resolved").await.expect("type");
        alice
            .client
            .find(fantoccini::Locator::Css("#recent-list details[open] select"))
            .await
            .expect("select")
            .select_by_value("Resolved")
            .await
            .expect("choose");
        alice
            .js("document.querySelector('#recent-list details[open] button[type=submit]').focus()")
            .await;
        alice
            .client
            .active_element()
            .await
            .expect("save focused")
            .send_keys(&enter)
            .await
            .expect("save");
        alice
            .until(
                SHORT,
                "the edited note listed",
                "document.querySelector('#recent-list [data-role=note]')?.textContent === 'Called back: resolved'
                 && document.querySelector('#recent-list [data-role=disposition]')?.textContent === 'Resolved'",
            )
            .await;
        let outline = alice
            .js("const b = document.querySelector('#recent-refresh'); b.focus();
                 return getComputedStyle(b).outlineStyle")
            .await;
        assert_eq!(outline, "solid", "keyboard focus is visible");

        // Bob has no `credit` role: his pop of the same customer says so instead of the data.
        let bobs_call = SipCall::invite(sip, "1002", "+14155550100", "Acme Front Desk").await;
        bob.until(
            SHORT,
            "bob's card with credit forbidden",
            &format!(
                "{CARD} && {CARD}.querySelector('[data-section=credit][data-status=forbidden]')
                 && {CARD}.querySelector('[data-section=balance][data-status=ok]')"
            ),
        )
        .await;
        assert_eq!(
            bob.text("[data-section=credit] .badge").await.as_deref(),
            Some("not permitted")
        );
        assert_eq!(
            alice
                .js("return document.querySelectorAll('article.card').length")
                .await,
            0,
            "bob's call is not alice's"
        );
        bobs_call.cancel().await;
    })
    .await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_or_a_reload_mid_ring_brings_the_card_back() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let sip = daemon.bound.sip_udp[0];
    // The page reaches the daemon through a loopback proxy the test can cut: every connection
    // reset, new ones refused, as when a switch or the daemon's host goes away.
    let proxy = Arc::new(proxy::Proxy::start(http).await);
    let front = proxy.addr;
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 900).await;
        // A wrong token first: refused (4401), said so, and not kept.
        alice.client.goto(&base(front)).await.expect("page");
        alice
            .client
            .find(fantoccini::Locator::Css("#token"))
            .await
            .expect("token field")
            .send_keys("not-a-token")
            .await
            .expect("type");
        alice
            .client
            .find(fantoccini::Locator::Css("#signin button[type=submit]"))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
        alice
            .until(
                SHORT,
                "the refusal shown",
                "!document.querySelector('#signin-error').hidden && document.querySelector('#conn').dataset.state === 'signed-out'",
            )
            .await;
        assert_eq!(
            alice.text("#signin-error").await.as_deref(),
            Some("That token was refused. Check it and sign in again.")
        );
        assert_eq!(
            alice.js("return sessionStorage.length").await,
            0,
            "a refused token is not kept"
        );
        alice.sign_in(&base(front), "alice-demo-token").await;
        assert_eq!(
            alice.js("return Object.keys(sessionStorage)").await,
            json!(["screenpop.token"]),
            "the token is in this tab's sessionStorage"
        );
        assert_eq!(alice.js("return localStorage.getItem('screenpop.token')").await, Value::Null);
        let call = SipCall::invite(sip, "1001", "+14155550100", "Acme Front Desk").await;
        alice
            .until(SHORT, "card", &format!("{CARD} && {CARD}.dataset.state === 'ringing'"))
            .await;

        proxy.cut();
        alice
            .until(
                SHORT,
                "offline shown",
                "document.querySelector('#conn').dataset.state === 'offline'",
            )
            .await;
        let offline = alice.text("#conn-text").await.unwrap_or_default();
        assert!(offline.starts_with("Offline · retrying in"), "{offline}");
        // Meanwhile the call is answered: only the snapshot can tell the page.
        call.answered().await;
        proxy.restore();
        alice
            .until(
                Duration::from_secs(20),
                "reconnected (backoff is capped) with the card answered from the snapshot",
                &format!(
                    "document.querySelector('#conn').dataset.state === 'live' && {CARD} && {CARD}.dataset.state === 'answered'"
                ),
            )
            .await;
        assert_eq!(
            alice.js("return document.querySelectorAll('article.card').length").await,
            1,
            "one card per call, not a second one"
        );

        // A reload (F5): the token is still in this tab's sessionStorage; the snapshot rebuilds
        // the card.
        alice.client.refresh().await.expect("reload");
        alice
            .until(
                SHORT,
                "card back after reload, its sections with it",
                &format!(
                    "{CARD} && {CARD}.dataset.state === 'answered' && {CARD}.querySelector('.name').textContent === 'Acme Corporation'
                     && {CARD}.querySelectorAll('.section[data-status=ok]').length === 4 && !{CARD}.querySelector('.loading')"
                ),
            )
            .await;
        assert!(
            alice.js("return document.querySelector('#signin').hidden").await == true,
            "no second sign-in"
        );
        call.bye().await;
        alice
            .until(SHORT, "ended", &format!("{CARD}.dataset.state === 'ended'"))
            .await;
    })
    .await;
    daemon.stop().await;
}

#[tokio::test]
async fn customer_data_is_shown_as_text_never_run_as_markup() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    const EVIL_NAME: &str = "<script>window.__pwned = 1; alert('xss')</script>Evil & Co";
    const EVIL_COMPANY: &str = "<img src=x onerror=\"window.__pwned = 2\">";
    let csv = format!(
        "id,name,company,account,crm_url,tags,numbers\n\
         evil-1,\"{}\",\"{}\",\"<b>ACC</b>\",javascript:alert(3),<svg onload=alert(4)>,main:+1 555 010 9999\n",
        EVIL_NAME.replace('"', "\"\""),
        EVIL_COMPANY.replace('"', "\"\""),
    );
    let daemon = support::start_with(|s| {
        let directory = screenpop::resolve::Directory::from_csv(
            csv.as_bytes(),
            "evil.csv",
            screenpop::resolve::Normaliser::new(phonenumber::country::Id::US),
            2,
        )
        .expect("csv");
        s.resolver = Arc::new(screenpop::resolve::Index::new(directory));
        // No CRM template: the customer's own crm_url (javascript:) must not become a link.
        s.push.session.page = Arc::new(tokio::sync::watch::Sender::new(Arc::new(PageSettings {
            crm_url: None,
            ..PageSettings::default()
        })));
    })
    .await;
    let http = daemon.bound.http.expect("http");
    let sip = daemon.bound.sip_udp[0];
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 900).await;
        alice.sign_in(&base(http), "alice-demo-token").await;
        alice
            .js("window.__alerts = 0; window.alert = () => { window.__alerts += 1; };
                 window.__csp = 0;
                 document.addEventListener('securitypolicyviolation', () => { window.__csp += 1; });")
            .await;
        let call = SipCall::invite(sip, "1001", "+15550109999", "<i>Display</i>").await;
        alice
            .until(SHORT, "the evil card", &format!("{CARD} && {CARD}.querySelector('.name')"))
            .await;
        // Were an <img src=x> made from the data, its error would fire once "x" fails to load:
        // a control image loaded now fails after it, so once the control's error has fired,
        // an injected handler would have run.
        alice
            .js("const i = new Image(); i.addEventListener('error', () => { window.__control = true; }); i.src = 'x?control';")
            .await;
        alice
            .until(SHORT, "the control image's error", "window.__control === true")
            .await;
        let seen = alice
            .js(&format!(
                "const c = {CARD}; return {{
                    name: c.querySelector('.name').textContent,
                    company: c.querySelector('[data-role=company]').textContent,
                    tags: c.querySelector('.tags').textContent,
                    display: c.querySelector('.display').textContent,
                    elements: c.querySelectorAll('script, img, svg, b, i').length,
                    crm: c.querySelectorAll('[data-role=crm]').length,
                    pwned: window.__pwned === undefined ? null : window.__pwned,
                    alerts: window.__alerts, csp: window.__csp,
                    announced: document.querySelector('#announce').textContent,
                }};"
            ))
            .await;
        assert_eq!(seen["name"], EVIL_NAME, "{seen}");
        assert_eq!(
            seen["company"],
            format!("{EVIL_COMPANY} · Account <b>ACC</b>"),
            "{seen}"
        );
        assert_eq!(seen["tags"], "<svg onload=alert(4)>");
        assert_eq!(seen["display"], "<i>Display</i>");
        assert_eq!(seen["elements"], 0, "no element made from data: {seen}");
        assert_eq!(seen["crm"], 0, "a javascript: CRM link is never offered");
        assert_eq!(seen["pwned"], Value::Null);
        assert_eq!(seen["alerts"], 0);
        assert_eq!(seen["csp"], 0, "nothing even tried to run inline");
        assert!(
            seen["announced"]
                .as_str()
                .is_some_and(|a| a.contains(EVIL_NAME)),
            "{seen}"
        );
        // No dialog is open (WebDriver would report one).
        assert!(alice.client.get_alert_text().await.is_err());
        call.cancel().await;
    })
    .await;
    daemon.stop().await;
}

// ---- configured sources, rendered by shape and by their display hints ----------------------

/// Three `[[sources]]` tables as IT would write them, CSV adapters over files written to `dir`
/// for Acme (account ACME-001): `ar_balance` looking like the demo's balance, `tickets` (a list
/// of objects) with columns, labels and formats, and `account_facts` (an object) with no hints.
fn custom_composer(dir: &std::path::Path) -> screenpop::compose::Composer {
    let cell = |v: Value| format!("\"{}\"", v.to_string().replace('"', "\"\""));
    let invoices = json!([
        {"number": "INV-10231", "date": "2026-09-30", "due": "2026-10-30", "amount": 320.0, "status": "overdue"},
        {"number": "INV-10388", "date": "2026-10-31", "due": "2026-11-30", "amount": 1200.75, "status": "open"}]);
    let files = [
        (
            "ar.csv",
            format!(
                "account,currency,balance,overdue,overdue_days,invoices\n\
                 ACME-001,USD,1520.75,320,41,{}\n",
                cell(invoices)
            ),
        ),
        (
            "tickets.csv",
            "ticket,account,opened,subject,amount,currency,urgent,internal_ref\n\
             T-1042,ACME-001,2026-11-02,\"<b>Late</b> delivery\",125.5,EUR,true,x-1\n\
             T-1043,ACME-001,2026-10-15T09:30:00Z,Wrong invoice,80,EUR,false,x-2\n"
                .to_owned(),
        ),
        (
            "facts.csv",
            "account,account_manager,credit_limit,next_review,segment\n\
             ACME-001,Dana Reyes,25000,2027-01-15,Wholesale\n"
                .to_owned(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("csv written");
    }
    let config = r##"
[[sources]]
name = "ar_balance"
type = "csv"
path = "ar.csv"
key_column = "account"
match = "account"
json_columns = ["invoices"]
[sources.display]
title = "Balance"
view = "balance"
labels = { balance = "Open balance" }

[[sources]]
name = "tickets"
type = "csv"
path = "tickets.csv"
key_column = "account"
match = "account"
rows = "many"
text_columns = ["ticket"]
[sources.display]
columns = ["ticket", "opened", "subject", "amount", "urgent"]
labels = { ticket = "#", opened = "Opened on" }
formats = { opened = "date", amount = "money", urgent = "badge" }

[[sources]]
name = "account_facts"
type = "csv"
path = "facts.csv"
key_column = "account"
match = "account"
text_columns = ["next_review"]
"##;
    #[derive(serde::Deserialize)]
    struct Sources {
        sources: Vec<screenpop::compose::SourceConfig>,
    }
    let sources: Sources = toml::from_str(config).expect("valid [[sources]]");
    screenpop::compose::Composer::from_config(
        &screenpop::compose::ComposeConfig::default(),
        &sources.sources,
        dir,
    )
    .expect("the sources start")
}

#[tokio::test]
async fn configured_sources_render_by_shape_and_by_their_display_hints() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    let dir = std::env::temp_dir().join(format!("screenpop-shape-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let composer = Arc::new(custom_composer(&dir));
    let daemon = support::start_with(|s| s.composer = Some(composer)).await;
    let http = daemon.bound.http.expect("http");
    let sip = daemon.bound.sip_udp[0];
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 1000).await;
        alice.sign_in(&base(http), "alice-demo-token").await;
        let call = SipCall::invite(sip, "1001", "+14155550100", "Acme Front Desk").await;
        alice
            .until(
                SHORT,
                "the three custom sections, complete",
                &format!(
                    "{CARD} && ['ar_balance', 'tickets', 'account_facts'].every((n) => {CARD}.querySelector('[data-section=' + n + '][data-status=ok]'))
                     && !{CARD}.querySelector('.loading')"
                ),
            )
            .await;
        let seen = alice
            .js(&format!(
                "const c = {CARD}; const s = (n) => c.querySelector('[data-section=' + n + ']');
                 const texts = (root, css) => [...root.querySelectorAll(css)].map((x) => x.textContent);
                 const ar = s('ar_balance'), t = s('tickets'), f = s('account_facts');
                 return {{
                   titles: texts(c, '.section h3 span:first-child').sort(),
                   views: Object.fromEntries([...c.querySelectorAll('.section')].map((x) => [x.dataset.section, x.dataset.view])),
                   wide: Object.fromEntries([ar, t, f].map((x) => [x.dataset.section, getComputedStyle(x).gridColumnEnd])),
                   arLabels: texts(ar, '.balance .facts dt'),
                   arValues: texts(ar, '.balance .facts dd'),
                   arOverdue: ar.querySelector('.facts .warn').textContent,
                   arInvoices: texts(ar, 'tbody tr'),
                   arOverdueRow: ar.querySelector('td.warn').textContent,
                   headers: texts(t, 'thead th'),
                   rows: [...t.querySelectorAll('tbody tr')].map((r) => [...r.cells].map((td) => td.textContent)),
                   pills: [...t.querySelectorAll('tbody .badge.pill')].map((p) => [p.textContent, p.className]),
                   opened: new Date(2026, 10, 2).toLocaleDateString(undefined, {{ year: 'numeric', month: 'short', day: 'numeric' }}),
                   elements: t.querySelectorAll('tbody b').length,
                   factLabels: texts(f, '.facts dt'),
                   factValues: texts(f, '.facts dd'),
                 }};"
            ))
            .await;
        assert_eq!(seen["titles"], json!(["Account facts", "Balance", "Tickets"]), "{seen}");
        assert_eq!(
            seen["views"],
            json!({"ar_balance": "balance", "tickets": "table", "account_facts": "fields"})
        );
        assert_eq!(
            seen["wide"],
            json!({"ar_balance": "-1", "tickets": "-1", "account_facts": "auto"}),
            "the balance view and tables take the card's width"
        );
        // `ar_balance` with `view = "balance"` looks like the demo's balance, with its label.
        assert_eq!(seen["arLabels"], json!(["Open balance", "Overdue"]), "{seen}");
        assert_eq!(seen["arValues"][0], "$1,520.75");
        let overdue = seen["arOverdue"].as_str().unwrap_or_default();
        assert!(overdue.contains("$320.00") && overdue.contains("41 days"), "{seen}");
        assert_eq!(
            seen["arInvoices"],
            json!(["INV-102312026-10-30$320.00overdue", "INV-103882026-11-30$1,200.75open"])
        );
        assert_eq!(seen["arOverdueRow"], "overdue");
        // `tickets`: the configured columns, in order, labelled; the formats applied; the
        // columns not listed (account, currency, internal_ref) left out.
        assert_eq!(
            seen["headers"],
            json!(["#", "Opened on", "Subject", "Amount", "Urgent"]),
            "{seen}"
        );
        let opened = seen["opened"].as_str().unwrap_or_default();
        assert!(opened.contains("2026") && opened != "2026-11-02", "{seen}");
        assert_eq!(
            seen["rows"][0],
            json!(["T-1042", opened, "<b>Late</b> delivery", "€125.50", "yes"]),
            "{seen}"
        );
        let row2 = &seen["rows"][1];
        assert_eq!((&row2[0], &row2[3], &row2[4]), (&json!("T-1043"), &json!("€80.00"), &json!("no")));
        assert!(
            row2[1].as_str().is_some_and(|d| d.contains("2026") && !d.contains('T')),
            "a timestamp in the agent's locale: {seen}"
        );
        assert_eq!(
            seen["pills"],
            json!([["yes", "badge pill on"], ["no", "badge pill off"]])
        );
        assert_eq!(seen["elements"], 0, "markup in data stays text");
        // `account_facts`, no hints: an object is labelled fields, keys humanised, in order.
        assert_eq!(
            seen["factLabels"],
            json!(["Account", "Account manager", "Credit limit", "Next review", "Segment"]),
            "{seen}"
        );
        assert_eq!(
            seen["factValues"],
            json!(["ACME-001", "Dana Reyes", "25000", "2027-01-15", "Wholesale"])
        );
        alice
            .js(&format!("{CARD}.scrollIntoView()"))
            .await;
        alice.screenshot(&screenshots().join("agent-page-custom-sections.png")).await;
        call.cancel().await;
    })
    .await;
    daemon.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_readme_screenshots_of_a_real_pop_at_1280_and_400_pixels() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let sip = daemon.bound.sip_udp[0];
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 1000).await;
        alice.sign_in(&base(http), "alice-demo-token").await;
        // An earlier call, answered and noted: it fills "Recent calls".
        let earlier = SipCall::invite(sip, "1001", "+17025551655", "").await;
        alice.until(SHORT, "earlier card", CARD).await;
        earlier.answered().await;
        earlier.bye().await;
        alice
            .until(SHORT, "earlier ended", &format!("{CARD}.dataset.state === 'ended'"))
            .await;
        alice
            .js("const f = document.querySelector('article.card form.notes');
                 f.querySelector('textarea').value = 'Confirmed the delivery address; sending the invoice copy.';
                 f.querySelector('select').value = 'Resolved';
                 f.requestSubmit();")
            .await;
        alice
            .until(SHORT, "noted", "document.querySelector('#recent-list [data-role=note]')")
            .await;
        alice.js("document.querySelector('article.card .dismiss').click()").await;
        // The shared number: two candidates to pick from.
        let shared = SipCall::invite(sip, "1001", "+13125550142", "").await;
        alice
            .until(SHORT, "candidates", "document.querySelector('button.candidate')")
            .await;
        // Acme rings last: it is the top card.
        let acme = SipCall::invite(sip, "1001", "+14155550100", "Acme Front Desk").await;
        alice
            .until(
                SHORT,
                "two cards",
                "document.querySelectorAll('article.card').length === 2 && document.querySelector('article.card .name').textContent === 'Acme Corporation'",
            )
            .await;
        alice
            .screenshot(&screenshots().join("agent-page.png"))
            .await;
        alice
            .client
            .set_window_size(400, 1000)
            .await
            .expect("resize");
        let width = alice.js("return window.innerWidth").await;
        assert_eq!(width, 400, "the viewport is 400 px wide");
        // Nothing wider than the panel: no horizontal scrolling.
        let overflow = alice
            .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert_eq!(overflow, 0, "the page fits 400 px");
        alice
            .screenshot(&screenshots().join("agent-page-400.png"))
            .await;
        // The shared number's candidates: picking one brings that customer's sections.
        alice
            .client
            .find(fantoccini::Locator::Css("button.candidate[data-customer-id=\"c-1202\"]"))
            .await
            .expect("candidate")
            .click()
            .await
            .expect("pick");
        let picked = "[...document.querySelectorAll('article.card')].find((c) => c.querySelector('.name').textContent === 'Sam Shared')";
        alice
            .until(
                SHORT,
                "the picked customer's sections",
                &format!("{picked} && {picked}.querySelector('[data-section=balance][data-status=ok]') && !{picked}.querySelector('button.candidate')"),
            )
            .await;
        acme.cancel().await;
        shared.cancel().await;
    })
    .await;
    daemon.stop().await;
}

// ---- profile sections, against the protocol spec ---------------------------------------------

/// A push server that plays the protocol by hand: it serves the page's real assets and a `/ws`
/// whose server messages the test sends (with `seq` and `at` added) and whose client
/// messages the test receives.
struct Scripted {
    addr: SocketAddr,
    to_page: tokio::sync::mpsc::Sender<Value>,
    from_page: tokio::sync::mpsc::Receiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start() -> Scripted {
        use axum::extract::ws::{Message, WebSocketUpgrade};
        use axum::routing::get;
        let (to_page, outbox) = tokio::sync::mpsc::channel::<Value>(64);
        let (inbox, from_page) = tokio::sync::mpsc::channel::<Value>(64);
        let outbox = Arc::new(tokio::sync::Mutex::new(Some(outbox)));
        let ws = move |upgrade: WebSocketUpgrade| {
            let (outbox, inbox) = (outbox.clone(), inbox.clone());
            async move {
                upgrade.on_upgrade(move |mut socket| async move {
                    // One page connection at a time holds the script.
                    let Some(mut outbox) = outbox.lock().await.take() else {
                        return;
                    };
                    let mut seq = 0u64;
                    loop {
                        tokio::select! {
                            msg = outbox.recv() => {
                                let Some(mut msg) = msg else { break };
                                msg["seq"] = json!(seq);
                                msg["at"] = json!(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
                                if msg.get("call_id").is_none() {
                                    msg["call_id"] = Value::Null;
                                }
                                validate(&msg);
                                seq += 1;
                                if socket.send(Message::text(msg.to_string())).await.is_err() {
                                    break;
                                }
                            }
                            frame = socket.recv() => match frame {
                                Some(Ok(Message::Text(text))) => {
                                    let v: Value = serde_json::from_str(&text).expect("the page sends JSON");
                                    let _ = inbox.send(v).await;
                                }
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                        }
                    }
                })
            }
        };
        let app = axum::Router::new()
            .route("/", get(screenpop::web::page::index))
            .route("/assets/{file}", get(screenpop::web::page::asset))
            .route("/ws", get(ws));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Scripted {
            addr,
            to_page,
            from_page,
            task,
        }
    }

    async fn send(&self, msg: Value) {
        self.to_page.send(msg).await.expect("script running");
    }

    async fn received(&mut self) -> Value {
        tokio::time::timeout(SHORT, self.from_page.recv())
            .await
            .expect("a message from the page within 5 s")
            .expect("open")
    }
}

/// Validates a scripted message against the schema, when the schema knows its type.
fn validate(msg: &Value) {
    static SCHEMA: std::sync::OnceLock<(Value, jsonschema::Validator)> = std::sync::OnceLock::new();
    let (schema, validator) = SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/push-protocol.schema.json"
        ))
        .expect("schema");
        let schema: Value = serde_json::from_str(&text).expect("json");
        let validator = jsonschema::validator_for(&schema).expect("valid schema");
        (schema, validator)
    });
    let known = schema["properties"]["type"]["enum"]
        .as_array()
        .is_some_and(|types| types.contains(&msg["type"]));
    if known {
        let errors: Vec<String> = validator.iter_errors(msg).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "scripted {msg} breaks the schema: {errors:?}"
        );
    }
}

fn acme() -> Value {
    json!({"id": "c-0001", "name": "Acme Corporation", "company": "Acme Corporation",
           "account": "ACME-001", "tags": ["vip", "wholesale"]})
}

fn pop(call_id: &str, number: &str, identity: Value) -> Value {
    let mut msg = json!({
        "type": "ringing", "call_id": call_id, "extension": "1001", "state": "ringing",
        "caller": {"number": number, "display": null, "withheld": false},
        "dialled": null,
        "started": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    });
    if let (Value::Object(m), Value::Object(extra)) = (&mut msg, identity) {
        m.extend(extra);
    }
    msg
}

fn section(call_id: &str, customer: &str, name: &str, status: &str, data: Value) -> Value {
    let mut m = json!({"type": "section", "call_id": call_id, "customer_id": customer,
                       "name": name, "title": name[..1].to_uppercase() + &name[1..],
                       "status": status, "data": data, "elapsed_ms": 2.4});
    if status != "ok" {
        m["data"] = Value::Null;
    }
    // The demo's sources carry display hints, as the daemon sends them; the page itself knows
    // no section by its name.
    let hints = match name {
        "balance" => Some(screenpop::demo::hints::balance()),
        "purchases" => Some(screenpop::demo::hints::purchases()),
        "credit" => Some(screenpop::demo::hints::credit()),
        _ => None,
    };
    if let Some(hints) = hints {
        m["display"] = serde_json::to_value(hints).expect("hints as JSON");
    }
    m
}

#[tokio::test]
async fn profile_sections_render_as_the_protocol_specifies() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    let mut server = Scripted::start().await;
    let addr = server.addr;
    let stop = server.task.abort_handle();
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 1000).await;
        alice.client.goto(&base(addr)).await.expect("page");
        alice
            .client
            .find(fantoccini::Locator::Css("#token"))
            .await
            .expect("token field")
            .send_keys("alice-demo-token")
            .await
            .expect("type");
        alice
            .client
            .find(fantoccini::Locator::Css("#signin button[type=submit]"))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
        assert_eq!(
            server.received().await,
            json!({"type": "auth", "token": "alice-demo-token"})
        );
        server
            .send(json!({"type": "ready", "agent": "alice", "name": "Alice Agent",
                         "extensions": ["1001"], "heartbeat_ms": 15000,
                         "page": {"crm_url": "https://crm.example/c/{id}?acct={account}",
                                  "dispositions": ["Resolved", "Callback"], "ring_sound": true}}))
            .await;
        server.send(json!({"type": "snapshot", "calls": [], "callbacks": []})).await;

        // A matched customer, then each source's answer as it arrives.
        server
            .send(pop("call-a", "+14155550100", json!({"customer": acme()})))
            .await;
        let balance = json!({"currency": "USD", "balance": 1520.75, "overdue": 320.0, "overdue_days": 41,
            "invoices": [{"number": "INV-10231", "date": "2026-09-30", "due": "2026-10-30", "amount": 320.0, "status": "overdue"},
                         {"number": "INV-10388", "date": "2026-10-31", "due": "2026-11-30", "amount": 1200.75, "status": "open"}]});
        let purchases = json!([
            {"order": "SO-7781", "date": "2026-11-02", "total": 842.5, "currency": "USD",
             "items": [{"sku": "W-10", "name": "Widget", "qty": 10, "price": 42.0}, {"sku": "G-2", "name": "Gasket", "qty": 5, "price": 84.5}]},
            {"order": "SO-7702", "date": "2026-10-12", "total": 126.0, "currency": "USD",
             "items": [{"sku": "W-10", "name": "Widget", "qty": 3, "price": 42.0}]}]);
        let credit = json!({"limit": 5000, "currency": "USD", "terms": "Net 30", "rating": "B", "hold": true});
        for msg in [
            section("call-a", "c-0001", "balance", "ok", balance),
            section("call-a", "c-0001", "purchases", "ok", purchases),
            section("call-a", "c-0001", "credit", "ok", credit),
            section("call-a", "c-0001", "loyalty", "ok", json!({"tier": "Gold", "points": 1200, "since": "2019-04-01"})),
            {
                let mut s = section("call-a", "c-0001", "tickets", "timeout", Value::Null);
                s["error"] = json!("no answer within 800 ms");
                s
            },
            section("call-a", "c-0001", "risk", "forbidden", Value::Null),
            {
                let mut s = section("call-a", "c-0001", "contracts", "ok", json!([{"contract": "K-1", "ends": "2027-01-31"}]));
                s["age"] = json!(125);
                s["elapsed_ms"] = json!(0);
                s
            },
            section("call-a", "c-0001", "contacts", "ok", json!(["Dana Reyes", "Lee Park"])),
            section("call-a", "c-0001", "shipments", "ok",
                    Value::Array((1..=12).map(|n| json!({"shipment": format!("SH-{n}"), "rate": 0.125})).collect())),
            {
                let mut s = section("call-a", "c-0001", "notes_on_file", "ok", Value::Null);
                s["title"] = json!("Notes on file");
                s
            },
            json!({"type": "complete", "call_id": "call-a", "customer_id": "c-0001",
                   "sections": ["balance", "purchases", "credit", "loyalty", "tickets", "risk", "contracts",
                                "contacts", "shipments", "notes_on_file"],
                   "missing": ["tickets", "risk"], "elapsed_ms": 31.0}),
        ] {
            server.send(msg).await;
        }
        let a = "document.querySelector('[data-call-id=\"call-a\"]')";
        alice
            .until(SHORT, "every section", &format!("{a} && {a}.querySelectorAll('.section').length === 10"))
            .await;
        let seen = alice
            .js(&format!(
                "const c = {a}; const s = (n) => c.querySelector('[data-section=' + n + ']');
                 return {{
                   crm: c.querySelector('[data-role=crm]').href,
                   overdue: s('balance').querySelector('.facts .warn').textContent,
                   invoices: s('balance').querySelectorAll('tbody tr').length,
                   overdueRow: s('balance').querySelector('td.warn').textContent,
                   orders: [...s('purchases').querySelectorAll('tbody tr')].map((r) => r.textContent),
                   hold: s('credit').querySelector('[data-role=hold]').textContent,
                   credit: s('credit').querySelector('.facts').textContent,
                   loyalty: s('loyalty').querySelector('.facts').textContent,
                   tickets: s('tickets').textContent,
                   risk: s('risk').textContent,
                   contracts: s('contracts').textContent,
                   contacts: [...s('contacts').querySelectorAll('li')].map((l) => l.textContent),
                   shipments: s('shipments').querySelectorAll('tbody tr').length,
                   shipmentsMore: s('shipments').querySelector('.more').textContent,
                   shipmentHeaders: [...s('shipments').querySelectorAll('th')].map((h) => h.textContent),
                   nothing: s('notes_on_file').querySelector('[data-role=empty]').textContent,
                   more: c.querySelectorAll('.loading').length,
                   missing: c.querySelector('.sections > p').textContent,
                 }};"
            ))
            .await;
        assert_eq!(seen["crm"], "https://crm.example/c/c-0001?acct=ACME-001", "{seen}");
        let overdue = seen["overdue"].as_str().unwrap_or_default();
        assert!(overdue.contains("$320.00") && overdue.contains("41 days"), "{seen}");
        assert_eq!(seen["invoices"], 2);
        assert_eq!(seen["overdueRow"], "overdue");
        assert_eq!(seen["orders"][0], "SO-77812026-11-0210 × Widget, 5 × Gasket$842.50", "{seen}");
        assert_eq!(seen["hold"], "Account on credit hold");
        let credit = seen["credit"].as_str().unwrap_or_default();
        assert!(credit.contains("$5,000.00") && credit.contains("Net 30") && credit.contains("RatingB"), "{seen}");
        // No hints: an object is labelled fields, its keys humanised.
        assert_eq!(seen["loyalty"], "TierGoldPoints1200Since2019-04-01", "{seen}");
        assert!(seen["tickets"].as_str().is_some_and(|t| t.contains("timed out") && t.contains("no answer within 800 ms")), "{seen}");
        assert!(seen["risk"].as_str().is_some_and(|t| t.contains("not permitted")), "{seen}");
        assert!(seen["contracts"].as_str().is_some_and(|t| t.contains("updated 2 min ago") && t.contains("K-1")), "{seen}");
        // By shape: a list of scalars is a list; a long table stops at ten rows; null is
        // nothing on file.
        assert_eq!(seen["contacts"], json!(["Dana Reyes", "Lee Park"]), "{seen}");
        assert_eq!(seen["shipments"], 10);
        assert_eq!(seen["shipmentsMore"], "+2 more");
        assert_eq!(seen["shipmentHeaders"], json!(["Shipment", "Rate"]));
        assert_eq!(seen["nothing"], "Nothing on file.");
        assert_eq!(seen["more"], 0, "complete: nothing more to wait for");
        assert_eq!(seen["missing"], "Not available: tickets, risk");

        // Candidates: nothing is fetched until the agent picks; then that customer's sections.
        server
            .send(pop("call-b", "+13125550142", json!({"candidates": [
                {"id": "c-1201", "name": "Pat Shared", "company": "Globex Holdings", "account": "AC-01201", "reason": "this is the customer's main number"},
                {"id": "c-1202", "name": "Sam Shared", "company": "Initech Systems", "account": "AC-01202", "reason": "you picked this customer last time"}]})))
            .await;
        let b = "document.querySelector('[data-call-id=\"call-b\"]')";
        alice
            .until(SHORT, "candidates", &format!("{b} && {b}.querySelectorAll('button.candidate').length === 2"))
            .await;
        let reasons = alice
            .js(&format!("return [...{b}.querySelectorAll('.candidates .reason')].map((r) => r.textContent)"))
            .await;
        assert_eq!(reasons, json!(["this is the customer's main number", "you picked this customer last time"]));
        // Then when each last called: filled in place, the buttons stay the same elements.
        alice
            .js(&format!("{b}.querySelector('button.candidate').dataset.mark = 'kept'; return null"))
            .await;
        let three_days_ago = humantime::format_rfc3339_millis(
            std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400 + 600),
        )
        .to_string();
        server
            .send(json!({"type": "last_contacts", "call_id": "call-b", "contacts": [
                {"customer_id": "c-1201", "last_contact": three_days_ago, "outcome": "missed"},
                {"customer_id": "c-1202"}]}))
            .await;
        alice
            .until(SHORT, "last contacts", &format!("{b}.querySelector('[data-role=last-contact]').textContent !== ''"))
            .await;
        let lasts = alice
            .js(&format!("return {{ lines: [...{b}.querySelectorAll('[data-role=last-contact]')].map((r) => r.textContent),
                                    kept: {b}.querySelector('button.candidate').dataset.mark || null }}"))
            .await;
        assert_eq!(lasts, json!({"lines": ["Last call 3 days ago · missed", "No earlier calls"], "kept": "kept"}));
        alice
            .client
            .find(fantoccini::Locator::Css("[data-call-id=\"call-b\"] button.candidate[data-customer-id=\"c-1202\"]"))
            .await
            .expect("candidate button")
            .click()
            .await
            .expect("pick");
        assert_eq!(
            server.received().await,
            json!({"type": "pick", "call_id": "call-b", "customer_id": "c-1202"})
        );
        server
            .send(json!({"type": "picked", "call_id": "call-b", "customer_id": "c-1202"}))
            .await;
        server
            .send(section("call-b", "c-1202", "balance", "ok", json!({"currency": "EUR", "balance": 0, "overdue": 0, "overdue_days": 0, "invoices": []})))
            .await;
        alice
            .until(SHORT, "picked customer's section", &format!("{b}.querySelector('[data-section=balance]')"))
            .await;
        let picked = alice
            .js(&format!("return {{ name: {b}.querySelector('.name').textContent,
                                    buttons: {b}.querySelectorAll('button.candidate').length,
                                    overdue: {b}.querySelector('[data-section=balance] .facts').textContent,
                                    warn: {b}.querySelectorAll('.warn').length }}"))
            .await;
        assert_eq!(picked, json!({"name": "Sam Shared", "buttons": 0, "overdue": "Balance€0.00Overduenone", "warn": 0}));

        // An approximate (switchboard) match says so, with its reason; a withheld number.
        server
            .send(pop("call-c", "+14155550177", json!({"customer": acme(), "approximate": true,
                "reason": "number not on file; same number block as the main number of Acme Corporation"})))
            .await;
        server
            .send(pop("call-d", "", json!({"unknown": true})))
            .await;
        let c = "document.querySelector('[data-call-id=\"call-c\"]')";
        alice
            .until(SHORT, "approximate card", &format!("{c} && {c}.querySelector('[data-role=approximate]')"))
            .await;
        assert_eq!(
            alice.text("[data-call-id=\"call-c\"] [data-role=approximate]").await.as_deref(),
            Some("Approximate match: number not on file; same number block as the main number of Acme Corporation")
        );
        server
            .send({
                let mut m = pop("call-e", "", json!({"unknown": true}));
                m["caller"] = json!({"number": null, "display": null, "withheld": true});
                m
            })
            .await;
        alice
            .until(SHORT, "withheld card", "document.querySelector('[data-call-id=\"call-e\"]')")
            .await;
        assert_eq!(alice.text("[data-call-id=\"call-e\"] .name").await.as_deref(), Some("Number withheld"));
        assert_eq!(alice.text("[data-call-id=\"call-d\"] .name").await.as_deref(), Some("Unknown caller"));
        // Answered with who answered; ended greys the card out but keeps it until dismissed.
        server.send(json!({"type": "answered", "call_id": "call-a", "by": "1001",
            "answered_at": "2026-11-23T11:59:15.227Z", "hangup_seen": false})).await;
        alice
            .until(SHORT, "answered by", &format!("{a}.querySelector('[data-role=state]').textContent === 'Answered at 1001'"))
            .await;
        // A fork target cannot see the hang-up: the card's clock stops at the answer.
        assert_eq!(
            alice.js(&format!("return {a}.querySelector('time').dataset.counting")).await,
            "0"
        );
        let shown = alice.js(&format!("return {a}.querySelector('time').textContent")).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            alice.js(&format!("return {a}.querySelector('time').textContent")).await,
            shown,
            "the clock does not run"
        );
        server.send(json!({"type": "ended", "call_id": "call-c", "reason": "answered_elsewhere"})).await;
        alice
            .until(SHORT, "ended elsewhere", &format!("{c}.dataset.state === 'ended' && {c}.querySelector('[data-role=state]').textContent === 'Answered elsewhere'"))
            .await;
        let opacity = alice
            .js(&format!("return getComputedStyle({c}.querySelector('.name')).opacity"))
            .await;
        assert_ne!(opacity, "1", "an ended card is greyed out");
        // Dismissing a live call tells the daemon.
        alice
            .js(&format!("{b}.querySelector('.dismiss').click()"))
            .await;
        assert_eq!(server.received().await, json!({"type": "dismiss", "call_id": "call-b"}));
        alice
            .js(&format!("{a}.scrollIntoView()"))
            .await;
        alice.screenshot(&screenshots().join("agent-page-sections.png")).await;
    })
    .await;
    stop.abort();
}

#[tokio::test]
async fn missed_callers_wait_in_the_call_back_list_and_ended_cards_fold_away() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let calls = daemon.calls.clone();
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 900).await;
        alice.sign_in(&base(http), "alice-demo-token").await;
        calls.apply(support::ringing("missed", "1001", "+14155550100"));
        alice
            .until(SHORT, "a ringing card", &format!("{CARD} && {CARD}.dataset.state === 'ringing'"))
            .await;
        calls.apply(screenpop::calls::CallEvent::Ended {
            key: "missed".into(),
            intake: screenpop::calls::Intake::SIP,
            extension: None,
            reason: screenpop::calls::EndReason::Cancelled,
        });
        alice
            .until(
                SHORT,
                "the ended card folds; the caller waits to be called back",
                &format!(
                    "{CARD}.dataset.state === 'ended' && {CARD}.classList.contains('folded')
                     && !document.querySelector('#clear-ended').hidden
                     && document.querySelectorAll('#callbacks-list li').length === 1
                     && document.querySelector('[data-role=callbacks-count]').textContent === '1'"
                ),
            )
            .await;
        let entry = alice
            .js("const li = document.querySelector('#callbacks-list li');
                 return { who: li.querySelector('.cb-who').textContent,
                          number: li.querySelector('.number').textContent,
                          link: li.querySelector('[data-role=call-back]').getAttribute('href') };")
            .await;
        assert_eq!(
            entry,
            json!({"who": "Acme Corporation", "number": "+1 415 555 0100", "link": "tel:+14155550100"})
        );
        // No AMI or ESL in the demo: nothing to dial through, so no "Ring me first".
        assert_eq!(
            alice
                .js("return document.querySelectorAll('#callbacks-list [data-action=dial]').length")
                .await,
            0
        );
        // A folded card opens again on a click on its name.
        alice.js(&format!("{CARD}.querySelector('.name').click()")).await;
        assert_eq!(
            alice.js(&format!("return {CARD}.classList.contains('folded')")).await,
            false
        );

        alice
            .js("document.querySelector('#callbacks-list [data-action=claim]').click()")
            .await;
        alice
            .until(
                SHORT,
                "claimed by alice",
                "document.querySelector('#callbacks-list li').dataset.state === 'claimed'
                 && document.querySelector('#callbacks-list [data-role=held]').textContent.includes('you are on it')",
            )
            .await;
        alice
            .js("document.querySelector('#callbacks-list [data-action=done]').click()")
            .await;
        alice
            .until(
                SHORT,
                "done: the list is empty",
                "document.querySelectorAll('#callbacks-list li').length === 0
                 && document.querySelector('[data-role=callbacks-count]').hidden
                 && !document.querySelector('#callbacks-empty').hidden",
            )
            .await;

        alice.js("document.querySelector('#clear-ended').click()").await;
        alice
            .until(SHORT, "ended cards cleared", "document.querySelectorAll('article.card').length === 0 && document.querySelector('#clear-ended').hidden")
            .await;

        // Acme calls again: a repeat caller, with the missed call in its history.
        calls.apply(support::ringing("again", "1001", "+14155550100"));
        alice
            .until(
                SHORT,
                "the repeat-caller badge and the history",
                &format!(
                    "{CARD} && {CARD}.querySelector('[data-role=repeat-badge]')?.textContent === 'Repeat caller · 2nd call'
                     && {CARD}.querySelector('[data-section=history] [data-role=outcome]')?.textContent === 'missed'
                     && {CARD}.querySelector('[data-section=history] [data-role=repeat]')?.textContent === 'Repeat caller: 2nd call in 24 hours'"
                ),
            )
            .await;
        // "/" goes to the customer search.
        alice
            .js("document.body.dispatchEvent(new KeyboardEvent('keydown', { key: '/', bubbles: true }))")
            .await;
        assert_eq!(
            alice.js("return document.activeElement.id").await,
            "search-q"
        );
    })
    .await;
    daemon.shutdown();
}

#[tokio::test]
async fn an_agent_finds_the_customer_of_an_unknown_caller_and_attaches_it() {
    let _slot = BROWSER_SLOTS.acquire().await.expect("slots");
    let daemon = support::start().await;
    let http = daemon.bound.http.expect("http");
    let calls = daemon.calls.clone();
    browser::run(|sessions: Sessions| async move {
        let alice = sessions.open(1280, 900).await;
        alice.sign_in(&base(http), "alice-demo-token").await;
        calls.apply(support::ringing("stranger", "1001", "+19995550123"));
        alice
            .until(
                SHORT,
                "an unknown caller rings",
                &format!("{CARD} && {CARD}.querySelector('.name').textContent === 'Unknown caller'"),
            )
            .await;
        // "/" then type: the search runs as the agent types.
        alice
            .js("document.body.dispatchEvent(new KeyboardEvent('keydown', { key: '/', bubbles: true }))")
            .await;
        alice
            .client
            .active_element()
            .await
            .expect("search focused")
            .send_keys("acme corp")
            .await
            .expect("type");
        alice
            .until(
                SHORT,
                "Acme found, with a button to attach it to the ringing call",
                "document.querySelector('#search-results li[data-customer-id=c-0001] [data-action=attach]')",
            )
            .await;
        alice
            .js("document.querySelector('#search-results li[data-customer-id=c-0001] [data-action=attach]').click()")
            .await;
        alice
            .until(
                SHORT,
                "the card names Acme and its sections and history arrive",
                &format!(
                    "{CARD}.querySelector('.name').textContent === 'Acme Corporation'
                     && {CARD}.querySelector('[data-role=attached]')
                     && ['balance', 'purchases', 'credit', 'history'].every((n) => {CARD}.querySelector('[data-section=' + n + '][data-status=ok]'))
                     && document.querySelector('#search-results').hidden"
                ),
            )
            .await;
        // A number fragment finds it too.
        alice
            .js("const q = document.querySelector('#search-q'); q.value = '555 0101'; q.dispatchEvent(new Event('input'));")
            .await;
        alice
            .until(
                SHORT,
                "found by part of its work number",
                "document.querySelector('#search-results li[data-customer-id=c-0001]')",
            )
            .await;
    })
    .await;
    daemon.shutdown();
}
