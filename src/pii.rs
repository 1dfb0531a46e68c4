//! Keeping phone numbers and customer data out of logs unless PII logging is switched on
//! (`[log] pii = true`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static LOG_PII: AtomicBool = AtomicBool::new(false);

/// Switches PII logging on or off for the whole process.
pub fn set_logging(enabled: bool) {
    LOG_PII.store(enabled, Ordering::Relaxed);
}

/// Whether PII logging is on: what an agent typed into a search may be logged.
pub fn logging() -> bool {
    LOG_PII.load(Ordering::Relaxed)
}

/// Displays a phone number masked: the first three and last two characters stay, the rest
/// becomes `*` (`+14155550100` → `+14*******00`). Shown whole when PII logging is on.
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if LOG_PII.load(Ordering::Relaxed) {
            return f.write_str(self.0);
        }
        let n = self.0.chars().count();
        for (i, c) in self.0.chars().enumerate() {
            if i < 3 || i + 2 >= n && n > 5 {
                write!(f, "{c}")?;
            } else {
                f.write_str("*")?;
            }
        }
        Ok(())
    }
}

/// A per-layer log filter for what other crates log: with PII logging off, their `debug` and
/// `trace` lines are not written, whatever the level filter says, because they can carry what
/// screenpop masks in its own lines (tokio-postgres's statement parameters, tungstenite's
/// WebSocket frames, request URLs with account numbers). Their `info` and above, and every line
/// of screenpop's own (which masks numbers and never logs customer data), pass.
pub struct DependencyGuard;

impl DependencyGuard {
    fn ours(meta: &tracing::Metadata<'_>) -> bool {
        meta.target() == "screenpop" || meta.target().starts_with("screenpop::")
    }

    fn quiet(meta: &tracing::Metadata<'_>) -> bool {
        *meta.level() <= tracing::Level::INFO
    }

    /// Whether a line with this metadata may be written when PII logging is `pii`.
    pub fn allows(meta: &tracing::Metadata<'_>, pii: bool) -> bool {
        Self::ours(meta) || Self::quiet(meta) || pii
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for DependencyGuard {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        Self::allows(meta, logging())
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // The answer for a dependency's debug or trace line changes with `[log] pii` on a
        // reload: ask again each time (the level filter before this one keeps that rare).
        if Self::ours(meta) || Self::quiet(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::sometimes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(Masked("+14155550100").to_string(), "+14*******00");
        assert_eq!(Masked("1001").to_string(), "100*");
        assert_eq!(Masked("").to_string(), "");
    }

    #[test]
    fn dependency_debug_lines_only_with_pii_logging() {
        use tracing::Level;
        static CALLSITE: tracing::callsite::DefaultCallsite =
            tracing::callsite::DefaultCallsite::new(&META);
        static META: tracing::Metadata<'static> = tracing::Metadata::new(
            "event",
            "tokio_postgres::query",
            Level::DEBUG,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        );
        static OURS: tracing::Metadata<'static> = tracing::Metadata::new(
            "event",
            "screenpop::telephony::sip",
            Level::TRACE,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        );
        assert!(!DependencyGuard::allows(&META, false));
        assert!(DependencyGuard::allows(&OURS, false));
        assert!(DependencyGuard::allows(&META, true));
    }
}
