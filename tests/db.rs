//! The schema and its migrations against the real PostgreSQL server.

#[path = "support/pg.rs"]
mod pg;

use std::time::Duration;

use futures_util::StreamExt;
use pg::TestDb;
use tokio_postgres::AsyncMessage;

/// A LISTEN connection whose notifications arrive on a channel.
async fn listener(
    url: &str,
    channel: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("listen");
    (client, rx)
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .ok()
        .flatten()
        .map(|(_, payload)| payload)
}

#[tokio::test]
async fn migrate_is_idempotent_and_creates_the_tables() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    assert_eq!(
        screenpop::db::migrate(&mut client).await.expect("again"),
        Vec::<i32>::new(),
        "nothing left to apply"
    );
    for table in [
        "customers",
        "customer_numbers",
        "agents",
        "call_log",
        "screenpop_migrations",
    ] {
        let row = client
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .await
            .expect("query");
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(table));
    }
    drop(client);
    db.drop_now().await;
}

#[tokio::test]
async fn changes_notify_with_the_customer_id_and_bulk_loads_notify_once() {
    let db = TestDb::new().await;
    let (_listen, mut rx) = listener(&db.url, "screenpop_customers").await;
    let client = db.client().await;
    client
        .batch_execute("INSERT INTO customers (id, name) VALUES ('c1', 'Acme'), ('c2', 'Globex')")
        .await
        .expect("insert");
    assert_eq!(next(&mut rx).await.as_deref(), Some("c1"));
    assert_eq!(next(&mut rx).await.as_deref(), Some("c2"));
    client
        .batch_execute(
            "INSERT INTO customer_numbers (customer_id, raw) VALUES ('c1', '(415) 555-0100')",
        )
        .await
        .expect("insert");
    assert_eq!(next(&mut rx).await.as_deref(), Some("c1"));
    // Moving a number to another customer notifies both.
    client
        .batch_execute("UPDATE customer_numbers SET customer_id = 'c2'")
        .await
        .expect("move");
    assert_eq!(
        (
            next(&mut rx).await.as_deref(),
            next(&mut rx).await.as_deref()
        ),
        (Some("c1"), Some("c2"))
    );
    // screenpop filling in e164 is not a change anyone needs to hear about (no loop).
    client
        .batch_execute("UPDATE customer_numbers SET e164 = '+14155550100'")
        .await
        .expect("e164");
    assert_eq!(next(&mut rx).await, None);
    // A bulk load is silent row by row and says '*' once.
    client
        .batch_execute(
            "BEGIN; SET LOCAL screenpop.bulk = 'on';
             INSERT INTO customers (id, name) SELECT 'b' || g, 'Bulk ' || g FROM generate_series(1, 500) g;
             NOTIFY screenpop_customers, '*'; COMMIT;",
        )
        .await
        .expect("bulk");
    assert_eq!(next(&mut rx).await.as_deref(), Some("*"));
    assert_eq!(
        next(&mut rx).await,
        None,
        "no per-row notifications during a bulk load"
    );
    client
        .batch_execute("DELETE FROM customers WHERE id = 'c2'")
        .await
        .expect("delete");
    assert_eq!(next(&mut rx).await.as_deref(), Some("c2"));
    drop(client);
    db.drop_now().await;
}
