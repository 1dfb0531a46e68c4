//! `screenpop lookup NUMBER`: what a call from this number would resolve to, and why, for IT;
//! with `--profile`, what every data source answers for that customer, and how fast.

use serde_json::json;

use crate::compose::{Composer, Part, Summary};
use crate::resolve::{Key, Resolution, Resolver};
use crate::sources::Who;

/// A composed profile, for the report.
#[derive(Debug)]
pub struct Composed {
    /// The customer asked about (none: nobody to ask about).
    pub customer_id: Option<String>,
    /// A note on the choice (candidates: the first was taken).
    pub note: Option<String>,
    /// The parts, in arrival order.
    pub parts: Vec<Part>,
    /// The end.
    pub summary: Option<Summary>,
}

/// Asks every configured source about the resolved customer (the best candidate when there
/// are several), as a call would.
pub async fn profile(
    config: &crate::config::Config,
    resolver: &dyn Resolver,
    resolution: &Resolution,
) -> anyhow::Result<Composed> {
    let sources: Vec<crate::compose::SourceConfig> =
        config.sources.iter().map(|s| s.get_ref().clone()).collect();
    let composer = Composer::from_config(&config.compose, &sources, &config.base)?;
    let offered = resolution.customers();
    let Some(customer) = offered.first() else {
        return Ok(Composed {
            customer_id: None,
            note: Some("no customer: a call from this number fetches no sections".into()),
            parts: Vec::new(),
            summary: None,
        });
    };
    let note = (offered.len() > 1).then(|| {
        format!(
            "{} candidates: a call fetches nothing until the agent picks one; showing the first",
            offered.len()
        )
    });
    if composer.is_empty() {
        return Ok(Composed {
            customer_id: Some(customer.id().to_owned()),
            note: Some("no [[sources]] configured".into()),
            parts: Vec::new(),
            summary: None,
        });
    }
    let who = Who {
        customer: (*customer).clone(),
        numbers: resolver.numbers(customer.id()),
        call_id: None,
    };
    let mut parts = Vec::new();
    let summary = composer.compose(&who, |p| parts.push(p)).await;
    Ok(Composed {
        customer_id: Some(customer.id().to_owned()),
        note,
        parts,
        summary: Some(summary),
    })
}

/// The profile as text: one block per section, in arrival order, with its timing.
pub fn profile_text(p: &Composed) -> String {
    let mut out = String::from("profile\n");
    if let Some(note) = &p.note {
        out.push_str(&format!("  ({note})\n"));
    }
    for part in &p.parts {
        let timing = match part.age {
            Some(age) => format!("cached {:.1} s ago", age.as_secs_f64()),
            None => format!("{:.1} ms", part.elapsed.as_secs_f64() * 1000.0),
        };
        out.push_str(&format!(
            "  {:<12} {:<9} {timing}\n",
            part.name,
            part.status.label()
        ));
        if let Some(error) = &part.error {
            out.push_str(&format!("      {error}\n"));
        }
        if let Some(data) = &part.data {
            let text = serde_json::to_string_pretty(&**data).unwrap_or_default();
            for line in text.lines() {
                out.push_str(&format!("      {line}\n"));
            }
        }
    }
    if let Some(summary) = &p.summary {
        let missing: Vec<&str> = summary.missing.iter().map(|m| &**m).collect();
        out.push_str(&format!(
            "  complete in {:.1} ms; missing: {}\n",
            summary.elapsed.as_secs_f64() * 1000.0,
            if missing.is_empty() {
                "none".to_owned()
            } else {
                missing.join(", ")
            }
        ));
    }
    out
}

/// The profile as JSON: the `section` bodies, `missing`, `elapsed_ms`.
pub fn profile_json(p: &Composed) -> serde_json::Value {
    let customer = p.customer_id.clone().unwrap_or_default();
    json!({
        "customer_id": p.customer_id,
        "note": p.note,
        "sections": p.parts.iter()
            .map(|part| serde_json::Value::Object(crate::push::message::section_body(&customer, part)))
            .collect::<Vec<_>>(),
        "missing": p.summary.as_ref().map(|s| s.missing.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
        "elapsed_ms": p.summary.as_ref().map(|s| s.elapsed.as_secs_f64() * 1000.0),
    })
}

/// The lookup's report as JSON: the input, the normalised key and the resolution.
pub fn json(input: &str, key: &Key, resolution: &Resolution) -> serde_json::Value {
    let (kind, text) = match key {
        Key::E164(k) => ("e164", k),
        Key::Digits(k) => ("digits", k),
    };
    json!({ "input": input, "key": { "kind": kind, "value": text }, "resolution": resolution })
}

/// The lookup's report as text, one fact per line.
pub fn text(key: &Key, resolution: &Resolution) -> String {
    let mut out = match key {
        Key::E164(k) => format!("key     {k} (E.164)\n"),
        Key::Digits(k) if k.is_empty() => "key     (no digits: nothing to look up)\n".to_owned(),
        Key::Digits(k) => format!("key     {k} (not a valid number: exact digits match)\n"),
    };
    let who = |c: &crate::resolve::Customer| {
        format!(
            "{} ({}){}",
            c.name(),
            c.id(),
            c.company().map(|co| format!(", {co}")).unwrap_or_default()
        )
    };
    match resolution {
        Resolution::Customer { customer } => out.push_str(&format!("match   {}\n", who(customer))),
        Resolution::Approximate { customer, reason } => {
            out.push_str(&format!("approx  {}: {reason}\n", who(customer)));
        }
        Resolution::Candidates { candidates } => {
            out.push_str(&format!("candidates ({}), best first:\n", candidates.len()));
            for c in candidates {
                out.push_str(&format!("  {}: {}\n", who(&c.customer), c.reason));
            }
        }
        other => out.push_str(&format!("no match ({})\n", other.label())),
    }
    out
}
