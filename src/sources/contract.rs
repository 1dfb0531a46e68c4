//! The adapter contract as a test: every adapter's tests call [`check`] with a customer the
//! source knows and one it does not (see `docs/adapters.md`).
//!
//! What it asks of an adapter:
//! 1. a known customer gives `Ok` with an object or an array (one record, or several);
//! 2. an unknown customer gives `Ok(null)`, `Ok([])` or a typed error, never the known
//!    customer's data;
//! 3. hostile field values (quotes, `'; DROP TABLE`, `../`, braces, control characters,
//!    non-ASCII) give `Ok` or a typed error, never a panic, and do not change the known
//!    customer's answer afterwards;
//! 4. concurrent fetches agree with each other;
//! 5. a fetch dropped half-way (the composer's timeout) leaves the adapter usable.

use std::future::Future;
use std::task::{Context, Poll};

use super::{Section, Source, Who};
use crate::customer::{Customer, CustomerFields};

/// Runs the contract; returns the known customer's section, or what was breached.
pub async fn check<S: Source>(source: &S, known: &Who, unknown: &Who) -> Result<Section, String> {
    let first = source
        .fetch(known)
        .await
        .map_err(|e| format!("1. the known customer gave an error: {e}"))?;
    if !(first.is_object() || first.is_array()) {
        return Err(format!(
            "1. the known customer gave {first}, not an object or an array"
        ));
    }
    match source.fetch(unknown).await {
        Ok(v) if v == first => {
            return Err("2. the unknown customer got the known customer's data".into());
        }
        Ok(serde_json::Value::Null) | Err(_) => {}
        Ok(serde_json::Value::Array(a)) if a.is_empty() => {}
        Ok(other) => {
            return Err(format!(
                "2. the unknown customer gave {other}; expected null, [] or an error"
            ));
        }
    }
    for hostile in [
        "'; DROP TABLE customers; --",
        "\" OR 1=1 --",
        "../../etc/passwd",
        "{customer_id}$account%00",
        "line\r\nbreak\u{0}",
        "Ünïcødé 客户 🚀",
        "",
    ] {
        let who = Who {
            customer: Customer::new(CustomerFields {
                id: if hostile.is_empty() { "x" } else { hostile },
                name: hostile,
                company: hostile,
                account: hostile,
                crm_url: hostile,
                tags: &[],
            }),
            numbers: vec![hostile.to_owned()],
            call_id: None,
        };
        // Ok or a typed error are both fine: the point is no panic and no effect.
        let _ = source.fetch(&who).await;
    }
    let again = source
        .fetch(known)
        .await
        .map_err(|e| format!("3. after hostile input the known customer gave an error: {e}"))?;
    if again != first {
        return Err("3. after hostile input the known customer's answer changed".into());
    }
    let concurrent = futures_util::future::join_all((0..8).map(|_| source.fetch(known))).await;
    for (i, result) in concurrent.into_iter().enumerate() {
        match result {
            Ok(v) if v == first => {}
            Ok(v) => return Err(format!("4. concurrent fetch {i} disagreed: {v}")),
            Err(e) => return Err(format!("4. concurrent fetch {i} failed: {e}")),
        }
    }
    {
        // Poll once, then drop: a timeout in the composer does exactly this.
        let mut fut = std::pin::pin!(source.fetch(known));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        if let Poll::Ready(Err(e)) = fut.as_mut().poll(&mut cx) {
            return Err(format!("5. a fetch failed at once: {e}"));
        }
    }
    let last = source
        .fetch(known)
        .await
        .map_err(|e| format!("5. after a dropped fetch the known customer gave an error: {e}"))?;
    if last != first {
        return Err("5. after a dropped fetch the answer changed".into());
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::csv::{Csv, CsvConfig};
    use crate::sources::testing::who;
    use crate::sources::{Rows, SourceError};

    #[tokio::test]
    async fn the_csv_adapter_keeps_the_contract() {
        let config = CsvConfig {
            path: "unused".into(),
            key_column: "account".into(),
            match_field: "account".into(),
            rows: Rows::One,
            json_columns: vec![],
            text_columns: vec![],
        };
        let csv = Csv::from_text(&config, "account,limit\nA1,500\n").expect("csv");
        let got = check(&csv, &who("c1", "A1"), &who("c2", "nobody"))
            .await
            .expect("contract");
        assert_eq!(got["limit"], 500);
    }

    /// An adapter that answers everyone alike breaks rule 2.
    struct Leaky;
    impl Source for Leaky {
        async fn fetch(&self, _: &Who) -> Result<Section, SourceError> {
            Ok(serde_json::json!({"secret": 1}))
        }
    }

    #[tokio::test]
    async fn a_leaky_adapter_fails_it() {
        let err = check(&Leaky, &who("c1", "A1"), &who("c2", "B2"))
            .await
            .expect_err("breach");
        assert!(err.starts_with("2."), "{err}");
    }
}
