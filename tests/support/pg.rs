//! A fresh PostgreSQL database per test, created from `schema/` on the machine's server
//! (127.0.0.1:5432, user postgres, trust auth; `.ci/run` starts it). Override the server with
//! `SCREENPOP_TEST_PG` (a URL without the database name).

#![allow(dead_code)]

/// A database made for one test; dropped (with its connections) by [`TestDb::drop_now`].
pub struct TestDb {
    pub name: String,
    pub url: String,
    server: String,
}

fn server() -> String {
    std::env::var("SCREENPOP_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

impl TestDb {
    /// Creates an empty database and applies the migrations.
    pub async fn new() -> TestDb {
        let server = server();
        let name = format!("screenpop_test_{:016x}", rand::random::<u64>());
        let admin = screenpop::db::connect(&format!("{server}/postgres"))
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = format!("{server}/{name}");
        let mut client = screenpop::db::connect(&url).await.expect("connect");
        screenpop::db::migrate(&mut client).await.expect("migrate");
        TestDb { name, url, server }
    }

    /// A new client on this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        screenpop::db::connect(&self.url).await.expect("connect")
    }

    /// Acme (one number) and two customers of other companies sharing `+1 312 555 0142`
    /// (a caller with candidates), each number written in another format.
    pub async fn seed_acme_and_shared(&self) {
        self.client()
            .await
            .batch_execute(
                "INSERT INTO customers (id, name, company) VALUES
                     ('acme', 'Acme Corporation', 'Acme'),
                     ('pat', 'Pat Shared', 'Globex'), ('sam', 'Sam Shared', 'Initech');
                 INSERT INTO customer_numbers (customer_id, raw, kind) VALUES
                     ('acme', '(415) 555-0100', 'main'),
                     ('pat', '+1 312 555 0142', 'main'), ('sam', '(312) 555-0142', 'main');",
            )
            .await
            .expect("seed");
    }

    /// A fresh call-log spool directory for a daemon on this database (each daemon needs its
    /// own), as the `[call_log]` line that names it.
    pub fn spool_line(&self) -> String {
        format!("spool_dir = \"{}\"\n", spool_dir().display())
    }

    /// Drops the database, ending its connections.
    pub async fn drop_now(self) {
        let admin = screenpop::db::connect(&format!("{}/postgres", self.server))
            .await
            .expect("connect");
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// A fresh, empty spool directory under the system's temp dir.
pub fn spool_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "screenpop-test-spool-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ))
}
