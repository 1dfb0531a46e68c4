//! Versioned schema migrations: the SQL files in `schema/`, compiled in, applied in order, each
//! in its own transaction, recorded in `screenpop_migrations`. Idempotent: applied versions are
//! skipped; an advisory lock keeps two `migrate` runs from racing.

use super::DbError;

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../schema/0001_init.sql")),
    (
        2,
        "keys_and_picks",
        include_str!("../../schema/0002_keys_and_picks.sql"),
    ),
    (3, "notes", include_str!("../../schema/0003_notes.sql")),
    (4, "history", include_str!("../../schema/0004_history.sql")),
    (
        5,
        "callbacks",
        include_str!("../../schema/0005_callbacks.sql"),
    ),
];

/// Advisory lock key for migrations ("screenpop" in ASCII, truncated).
const LOCK_KEY: i64 = 0x7363_7265_656e_706f;

/// The highest migration applied; `None` when the schema was never migrated (no
/// `screenpop_migrations` table).
pub async fn applied(client: &tokio_postgres::Client) -> Result<Option<i32>, DbError> {
    let exists = client
        .query_one(
            "SELECT to_regclass('screenpop_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(DbError::query("looking for screenpop_migrations"))?
        .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM screenpop_migrations", &[])
        .await
        .map_err(DbError::query("reading screenpop_migrations"))?;
    Ok(Some(row.get::<_, Option<i32>>(0).unwrap_or(0)))
}

/// Applies the pending migrations; returns the versions applied now.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS screenpop_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(DbError::query("creating screenpop_migrations"))?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        let tx = client
            .transaction()
            .await
            .map_err(DbError::query("starting a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(DbError::query("locking migrations"))?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM screenpop_migrations WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(DbError::query("reading screenpop_migrations"))?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(sql).await.map_err(DbError::query(format!(
            "applying migration {version:04} ({name})"
        )))?;
        tx.execute(
            "INSERT INTO screenpop_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(DbError::query("recording a migration"))?;
        tx.commit()
            .await
            .map_err(DbError::query(format!("committing migration {version:04}")))?;
        tracing::info!(version, name, "Migration applied.");
        applied.push(version);
    }
    Ok(applied)
}
