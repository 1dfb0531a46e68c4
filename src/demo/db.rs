//! `screenpop demo-db`: the demo as a site would run it, on PostgreSQL. Four databases on one
//! server: the customer index (`PREFIX`, from `schema/`) and the three separate systems the
//! profile sections come from, `PREFIX_accounting`, `PREFIX_sales` and `PREFIX_credit`
//! (`schema/demo/`), filled for N customers consistent with the index: the bundled 1,202 and,
//! beyond them, generated ones. `config/screenpop.example.toml` wires the three sources to
//! them with the queries below.

use std::fmt::Write as _;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::SinkExt;

use super::data;
use crate::db::DbError;

/// The `balance` source's query (accounting).
pub const BALANCE_SQL: &str = "SELECT a.currency,
       coalesce(sum(i.amount) FILTER (WHERE NOT i.paid), 0) AS balance,
       coalesce(sum(i.amount) FILTER (WHERE NOT i.paid AND i.due < current_date), 0) AS overdue,
       coalesce(max(current_date - i.due) FILTER (WHERE NOT i.paid AND i.due < current_date), 0) AS overdue_days,
       coalesce(json_agg(json_build_object('number', i.number, 'date', i.issued, 'due', i.due,
                  'amount', i.amount, 'status', CASE WHEN i.paid THEN 'paid'
                  WHEN i.due < current_date THEN 'overdue' ELSE 'open' END) ORDER BY i.issued DESC)
                FILTER (WHERE i.number IS NOT NULL), '[]') AS invoices
FROM accounts a LEFT JOIN invoices i ON i.account = a.account
WHERE a.account = $account
GROUP BY a.account, a.currency";

/// The `purchases` source's query (sales), `rows = "many"`.
pub const PURCHASES_SQL: &str =
    "SELECT o.id AS \"order\", o.placed AS date, sum(it.qty * it.price) AS total, o.currency,
       json_agg(json_build_object('sku', it.sku, 'name', it.name, 'qty', it.qty, 'price', it.price)
                ORDER BY it.sku) AS items
FROM orders o JOIN order_items it ON it.order_id = o.id
WHERE o.account = $account
GROUP BY o.id ORDER BY o.placed DESC LIMIT 5";

/// The `credit` source's query (credit).
pub const CREDIT_SQL: &str = "SELECT credit_limit AS \"limit\", currency, terms, rating, hold FROM credit_terms WHERE account = $account";

/// The databases made, by role.
#[derive(Debug, Clone)]
pub struct DemoDatabases {
    /// The customer index (`[directory] database_url`).
    pub index: String,
    /// Accounting.
    pub accounting: String,
    /// Sales.
    pub sales: String,
    /// Credit.
    pub credit: String,
    /// Customers created.
    pub customers: usize,
}

/// Customers CSV rows for generated customers `from..to` (beyond the bundled ones).
pub fn generated_customers(from: usize, to: usize) -> String {
    const FIRST: &[&str] = &[
        "Ada", "Alan", "Grace", "Edsger", "Barbara", "Ken", "Margaret", "Dennis", "Frances",
        "Donald", "Radia", "Tim", "Hedy", "Linus", "Sophie", "John",
    ];
    const LAST: &[&str] = &[
        "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Ritchie",
        "Allen", "Knuth", "Perlman", "Berners", "Lamarr", "Torvalds", "Wilson", "Backus",
    ];
    const AREAS: &[u32] = &[
        201, 202, 206, 213, 303, 305, 312, 404, 503, 512, 602, 617, 702, 718, 801, 919,
    ];
    let mut out = String::new();
    for i in from..to {
        let first = FIRST[i % FIRST.len()];
        let last = LAST[(i / FIRST.len()) % LAST.len()];
        let area = AREAS[(i / 7) % AREAS.len()];
        let exchange = 200 + (i / 131) % 800;
        let line = (i * 7919) % 10_000;
        let company = if i % 3 == 0 {
            format!("{last} Holdings {}", i / 50)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "c-{i:07},{first} {last},{company},AC-{i:07},,,mobile:+1 {area} {exchange} {line:04}"
        );
    }
    out
}

async fn create_database(admin: &tokio_postgres::Client, name: &str) -> Result<(), DbError> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(DbError::query("looking for a database"))?
        .is_some();
    if exists {
        admin
            .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .await
            .map_err(DbError::query(format!("dropping {name}")))?;
    }
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .map_err(DbError::query(format!("creating {name}")))
}

async fn copy(
    client: &tokio_postgres::Client,
    statement: &str,
    rows: String,
) -> Result<(), DbError> {
    let sink = client
        .copy_in(statement)
        .await
        .map_err(DbError::query("copying demo data"))?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(rows))
        .await
        .map_err(DbError::query("copying demo data"))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(DbError::query("copying demo data"))?;
    Ok(())
}

/// (Re)creates the four demo databases on `server` (a URL without a database name, e.g.
/// `postgres://postgres@127.0.0.1:5432`) for `customers` customers (at least the bundled
/// ones). Names must be plain identifiers.
pub async fn create(server: &str, prefix: &str, customers: usize) -> anyhow::Result<DemoDatabases> {
    anyhow::ensure!(
        !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "the prefix must be lower-case letters, digits and underscores"
    );
    let server = server.trim_end_matches('/');
    let admin = crate::db::connect(&format!("{server}/postgres")).await?;
    let names = [
        prefix.to_owned(),
        format!("{prefix}_accounting"),
        format!("{prefix}_sales"),
        format!("{prefix}_credit"),
    ];
    for name in &names {
        create_database(&admin, name).await?;
    }
    let url = |name: &str| format!("{server}/{name}");

    // The customer index: the bundled customers, then generated ones.
    let bundled = super::CUSTOMERS_CSV.lines().count().saturating_sub(1);
    let mut customers_csv = super::CUSTOMERS_CSV.to_owned();
    if !customers_csv.ends_with('\n') {
        customers_csv.push('\n');
    }
    customers_csv.push_str(&generated_customers(bundled, customers.max(bundled)));
    let mut index = crate::db::connect(&url(&names[0])).await?;
    crate::db::migrate(&mut index).await?;
    let summary = crate::resolve::import::import(
        &mut index,
        customers_csv.as_bytes(),
        crate::resolve::import::Format::Csv,
        "demo customers",
        crate::resolve::Normaliser::new(phonenumber::country::Id::US),
        &|_| {},
    )
    .await?;

    // The three systems, for every customer's account.
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(customers_csv.as_bytes());
    let accounts: Vec<data::Account> = reader
        .deserialize::<crate::resolve::import::CsvRow>()
        .filter_map(Result::ok)
        .filter(|r| !r.account.is_empty())
        .map(|r| data::account(&r.account))
        .collect();
    let today = SystemTime::now();
    let (mut acc, mut inv, mut ord, mut items, mut credit) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    for a in &accounts {
        let _ = writeln!(acc, "{},{}", a.account, a.currency);
        for i in &a.invoices {
            let _ = writeln!(
                inv,
                "{},{},{},{},{}.{:02},{}",
                i.number,
                a.account,
                data::date(today, i.issued_days_ago),
                data::date(today, i.issued_days_ago - i.terms_days),
                i.cents / 100,
                i.cents % 100,
                i.paid
            );
        }
        for o in &a.orders {
            let _ = writeln!(
                ord,
                "{},{},{},{}",
                o.id,
                a.account,
                data::date(today, o.placed_days_ago),
                a.currency
            );
            for it in &o.items {
                let _ = writeln!(
                    items,
                    "{},{},\"{}\",{},{}.{:02}",
                    o.id,
                    it.sku,
                    it.name.replace('"', "\"\""),
                    it.qty,
                    it.price_cents / 100,
                    it.price_cents % 100
                );
            }
        }
        let _ = writeln!(
            credit,
            "{},{}.{:02},{},{},{},{}",
            a.account,
            a.credit.limit_cents / 100,
            a.credit.limit_cents % 100,
            a.currency,
            a.credit.terms,
            a.credit.rating,
            a.credit.hold
        );
    }
    let accounting = crate::db::connect(&url(&names[1])).await?;
    accounting
        .batch_execute(include_str!("../../schema/demo/accounting.sql"))
        .await
        .map_err(DbError::query("creating the accounting schema"))?;
    copy(
        &accounting,
        "COPY accounts FROM STDIN WITH (FORMAT csv)",
        acc,
    )
    .await?;
    copy(
        &accounting,
        "COPY invoices (number, account, issued, due, amount, paid) FROM STDIN WITH (FORMAT csv)",
        inv,
    )
    .await?;
    let sales = crate::db::connect(&url(&names[2])).await?;
    sales
        .batch_execute(include_str!("../../schema/demo/sales.sql"))
        .await
        .map_err(DbError::query("creating the sales schema"))?;
    copy(&sales, "COPY orders FROM STDIN WITH (FORMAT csv)", ord).await?;
    copy(
        &sales,
        "COPY order_items FROM STDIN WITH (FORMAT csv)",
        items,
    )
    .await?;
    let credit_db = crate::db::connect(&url(&names[3])).await?;
    credit_db
        .batch_execute(include_str!("../../schema/demo/credit.sql"))
        .await
        .map_err(DbError::query("creating the credit schema"))?;
    copy(
        &credit_db,
        "COPY credit_terms FROM STDIN WITH (FORMAT csv)",
        credit,
    )
    .await?;
    for db in [&accounting, &sales, &credit_db] {
        db.batch_execute("ANALYZE")
            .await
            .map_err(DbError::query("analysing"))?;
    }
    Ok(DemoDatabases {
        index: url(&names[0]),
        accounting: url(&names[1]),
        sales: url(&names[2]),
        credit: url(&names[3]),
        customers: summary.customers as usize,
    })
}

/// The annotated example config (`config/screenpop.example.toml`) turned to the databases
/// `create` made: customers from the index database instead of the bundled CSV, the three
/// sources on these accounting, sales and credit databases. What `screenpop demo-db` writes.
pub fn config_toml(dbs: &DemoDatabases) -> String {
    const EXAMPLE: &str = include_str!("../../config/screenpop.example.toml");
    const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/screenpop_demo";
    let mut text = String::with_capacity(EXAMPLE.len() + 256);
    for line in EXAMPLE.lines() {
        if line.starts_with("csv = \"../examples/data/customers.csv\"") {
            let _ = writeln!(
                text,
                "# Written by `screenpop demo-db`: the customer index it filled.\ndatabase_url = \"{}\"",
                dbs.index
            );
        } else if let Some(rest) = line
            .strip_prefix("database_url = \"")
            .and_then(|r| r.strip_prefix(DEFAULT_SERVER))
        {
            let url = match rest {
                "_accounting\"" => &dbs.accounting,
                "_sales\"" => &dbs.sales,
                "_credit\"" => &dbs.credit,
                _ => {
                    text.push_str(line);
                    text.push('\n');
                    continue;
                }
            };
            let _ = writeln!(text, "database_url = \"{url}\"");
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// The three sources over the demo databases (what `config/screenpop.example.toml` says).
pub fn sources(dbs: &DemoDatabases) -> Vec<crate::compose::SourceConfig> {
    #[derive(serde::Deserialize)]
    struct Sources {
        sources: Vec<crate::compose::SourceConfig>,
    }
    toml::from_str::<Sources>(&sources_toml(dbs, "[\"credit\"]"))
        .map(|s| s.sources)
        .unwrap_or_default()
}

/// The three `[[sources]]` tables over the demo databases: balance (accounting), purchases
/// (sales) and credit (credit), the credit source for the agents with `credit_roles` (a TOML
/// array; `[]`: everyone).
pub fn sources_toml(dbs: &DemoDatabases, credit_roles: &str) -> String {
    [
        source_toml(
            "balance",
            "Balance",
            &dbs.accounting,
            BALANCE_SQL,
            "one",
            "[]",
        ),
        source_toml(
            "purchases",
            "Recent purchases",
            &dbs.sales,
            PURCHASES_SQL,
            "many",
            "[]",
        ),
        source_toml(
            "credit",
            "Credit terms",
            &dbs.credit,
            CREDIT_SQL,
            "one",
            credit_roles,
        ),
    ]
    .join("\n")
}

/// One `[[sources]]` table for a demo database.
pub fn source_toml(
    name: &str,
    title: &str,
    url: &str,
    sql: &str,
    rows: &str,
    roles: &str,
) -> String {
    format!(
        "[[sources]]\nname = \"{name}\"\ntitle = \"{title}\"\ntype = \"postgres\"\ndatabase_url = \"{url}\"\nrows = \"{rows}\"\nroles = {roles}\ntimeout = \"800ms\"\nquery = '''\n{sql}\n'''\n"
    )
}
