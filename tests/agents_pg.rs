//! Agents from the PostgreSQL `agents` table (with `[directory] database_url`): they sign in on
//! the push channel and get their pops; rows added or removed while the daemon runs take effect
//! within a second.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use screenpop::config::TokenHash;
use support::pg::TestDb;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Signs in; returns the first message's type and the socket ("ready", or "closed").
async fn sign_in(
    http: std::net::SocketAddr,
    token: &str,
) -> (
    String,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("connect");
    ws.send(Message::text(format!(
        "{{\"type\":\"auth\",\"token\":\"{token}\"}}"
    )))
    .await
    .expect("send");
    let kind = match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<serde_json::Value>(&t)
            .expect("json")["type"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        _ => "closed".to_owned(),
    };
    (kind, ws)
}

#[tokio::test]
async fn agents_from_the_table_sign_in_and_changes_apply_live() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO agents (id, display_name, token_sha256, extensions) VALUES ('dora', 'Dora', $1, '{2001}')",
            &[&TokenHash::of("dora-token").hex()],
        )
        .await
        .expect("agent");
    let toml = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[directory]\ndatabase_url = \"{}\"\n[call_log]\n{}",
        db.url,
        db.spool_line()
    );
    let config = screenpop::config::Config::parse(&toml, std::path::Path::new("agents.toml"))
        .expect("config");
    let daemon = screenpop::daemon::Daemon::start(
        screenpop::daemon::settings_from(&config)
            .await
            .expect("settings"),
    )
    .await
    .expect("start");
    let http = daemon.bound.http.expect("http");

    let (kind, mut dora) = sign_in(http, "dora-token").await;
    assert_eq!(kind, "ready");
    let _snapshot = dora.next().await;
    let peer = UdpPeer::new(daemon.bound.sip_udp[0]).await;
    peer.send(&request(
        "INVITE",
        "2001",
        peer.local(),
        "UDP",
        "dora@test",
        "z9hG4bKdora",
        1,
        "",
    ))
    .await;
    let pop = loop {
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(3), dora.next()).await
        else {
            panic!("no pop")
        };
        let v: serde_json::Value = serde_json::from_str(&t).expect("json");
        if v["type"] == "ringing" {
            break v;
        }
    };
    assert_eq!(pop["extension"], "2001");

    // A new row signs in within a second; a deleted one no longer can.
    client
        .execute(
            "INSERT INTO agents (id, display_name, token_sha256, extensions) VALUES ('eve', 'Eve', $1, '{2002}')",
            &[&TokenHash::of("eve-token").hex()],
        )
        .await
        .expect("agent");
    client
        .batch_execute("DELETE FROM agents WHERE id = 'dora'")
        .await
        .expect("delete");
    let started = Instant::now();
    loop {
        let (eve, _) = sign_in(http, "eve-token").await;
        let (dora_again, _) = sign_in(http, "dora-token").await;
        if eve == "ready" && dora_again == "closed" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "agent changes not applied within 1 s ({eve}, {dora_again})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(daemon.stop().await);
    db.drop_now().await;
}
