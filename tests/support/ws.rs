//! A real WebSocket client for the push channel (tokio-tungstenite), every message checked
//! against `schema/push-protocol.schema.json`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The push protocol's JSON Schema, compiled once.
pub fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/push-protocol.schema.json"
        ))
        .expect("schema");
        jsonschema::validator_for(&serde_json::from_str(&text).expect("json"))
            .expect("valid schema")
    })
}

/// Signs in; returns the socket and the snapshot.
pub async fn sign_in(http: SocketAddr, token: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("ws");
    ws.send(Message::text(
        json!({"type": "auth", "token": token}).to_string(),
    ))
    .await
    .expect("auth");
    expect(&mut ws, "ready").await;
    let snapshot = expect(&mut ws, "snapshot").await;
    (ws, snapshot)
}

/// The next message (schema-checked) with its raw text, or `None` within `wait`.
pub async fn next_raw(ws: &mut Ws, wait: Duration) -> Option<(Value, String)> {
    loop {
        let frame = tokio::time::timeout(wait, ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = frame {
            let v: Value = serde_json::from_str(&text).expect("json");
            let errors: Vec<String> = validator()
                .iter_errors(&v)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "schema violations {errors:?} in {v}");
            return Some((v, text.to_string()));
        }
    }
}

/// How long a test waits for a message before failing (generous: CI machines are busy).
pub const WAIT: Duration = Duration::from_secs(15);

/// The next message of a type, skipping others; fails after [`WAIT`].
pub async fn expect(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let (v, _) = next_raw(ws, WAIT)
            .await
            .unwrap_or_else(|| panic!("no `{kind}` within {WAIT:?}"));
        if v["type"] == kind {
            return v;
        }
    }
}

/// Every message until (and including) the first of type `until`, with raw texts.
pub async fn until(ws: &mut Ws, until: &str) -> Vec<(Value, String)> {
    let mut got = Vec::new();
    loop {
        let (v, raw) = next_raw(ws, WAIT)
            .await
            .unwrap_or_else(|| panic!("no `{until}` within {WAIT:?}; got {got:?}"));
        let done = v["type"] == until;
        got.push((v, raw));
        if done {
            return got;
        }
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}
