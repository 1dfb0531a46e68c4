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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(Masked("+14155550100").to_string(), "+14*******00");
        assert_eq!(Masked("1001").to_string(), "100*");
        assert_eq!(Masked("").to_string(), "");
    }
}
