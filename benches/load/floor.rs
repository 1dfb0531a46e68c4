//! The floor: the least any screen-pop relay must do. A UDP datagram comes in and leaves as one
//! WebSocket frame to one connected agent: no SIP parsing, no transaction, no lookup, no JSON.
//! The datagram's first four bytes (big-endian) name the agent's index; the rest is forwarded
//! as is, and the datagram goes back to its sender behind a `SIP/2.0 100 Trying` line (a fork
//! target's immediate answer, timed like the daemon's). Agents connect to `/ws` and send their auth message (`…"load-token-N"…`); the relay
//! answers one `ready` frame. It runs on the same tokio and tungstenite as the daemon, so the
//! load generator can report the daemon's latency as a ratio to it.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Slots = Arc<RwLock<Vec<Option<mpsc::Sender<Bytes>>>>>;

/// Binds UDP and TCP on 127.0.0.1 (any free ports) and returns their addresses with the task
/// that serves them until `stop` is cancelled.
pub async fn start(
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(SocketAddr, SocketAddr, tokio::task::JoinHandle<()>)> {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (udp_addr, ws_addr) = (udp.local_addr()?, listener.local_addr()?);
    let slots: Slots = Arc::default();
    let accept = {
        let (slots, stop) = (slots.clone(), stop.clone());
        async move {
            loop {
                let conn = tokio::select! {
                    _ = stop.cancelled() => break,
                    conn = listener.accept() => conn,
                };
                let Ok((stream, _)) = conn else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(agent(stream, slots.clone(), stop.clone()));
            }
        }
    };
    let relay = async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => break,
                got = udp.recv_from(&mut buf) => got,
            };
            let Ok((len, peer)) = got else { continue };
            if len < 4 {
                continue;
            }
            // What a SIP fork target must also do: answer at once (here the datagram itself
            // comes back behind a 100 status line, so the generator times it as it times the
            // daemon's 100 Trying).
            let mut answer = Vec::with_capacity(len + 16);
            answer.extend_from_slice(b"SIP/2.0 100 Trying\r\n");
            answer.extend_from_slice(&buf[4..len]);
            let _ = udp.try_send_to(&answer, peer);
            let index = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let slot = slots
                .read()
                .ok()
                .and_then(|s| s.get(index).cloned().flatten());
            if let Some(tx) = slot {
                let _ = tx.try_send(Bytes::copy_from_slice(&buf[4..len]));
            }
        }
    };
    let task = tokio::spawn(async move {
        tokio::join!(accept, relay);
    });
    Ok((udp_addr, ws_addr, task))
}

async fn agent(
    stream: tokio::net::TcpStream,
    slots: Slots,
    stop: tokio_util::sync::CancellationToken,
) {
    // The daemon's buffer sizes (src/push): 4 KiB read, no write buffer.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let index = match source.next().await {
        Some(Ok(Message::Text(t))) => t.split("load-token-").nth(1).and_then(|rest| {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            rest[..digits].parse::<usize>().ok()
        }),
        _ => None,
    };
    let Some(index) = index else { return };
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    if let Ok(mut s) = slots.write() {
        if s.len() <= index {
            s.resize(index + 1, None);
        }
        s[index] = Some(tx);
    }
    if sink
        .send(Message::text("{\"type\":\"ready\"}"))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                if sink.send(Message::Binary(frame)).await.is_err() {
                    break;
                }
            }
            msg = source.next() => {
                if !matches!(msg, Some(Ok(_))) {
                    break;
                }
            }
        }
    }
    if let Ok(mut s) = slots.write()
        && let Some(slot) = s.get_mut(index)
    {
        *slot = None;
    }
}
