//! `screenpop lookup NUMBER`: what a call from this number would resolve to, and why, for IT.

use serde_json::json;

use super::{Key, Resolution};

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
    let who = |c: &super::Customer| {
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
