//! `check-config --connect`: after the file validates, reach every external peer it names,
//! all at once, each within one timeout, and say per peer whether it answered, how fast and
//! why not. Each check is the client's own code (the AMI and ESL logins, the dialog intake's
//! socket, the cluster's NATS options, the sources' adapters, `db`), run once: this module only
//! lists the peers and times them. Does not own any protocol.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// One peer's outcome.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What was reached (`directory database`, `ami[0] pbx1 10.0.0.5:5038`).
    pub what: String,
    /// What answered, or why it did not (one line).
    pub result: Result<String, String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Verdict {
    /// Whether the peer answered as it should.
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }

    /// `ok   directory database   12 ms  schema at version 5`, `what` padded to `width`.
    pub fn line(&self, width: usize) -> String {
        let (verdict, reason) = match &self.result {
            Ok(r) => ("ok", r),
            Err(r) => ("FAIL", r),
        };
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!(
            "{verdict:<4} {what:<width$} {ms:>6} ms  {reason}",
            what = self.what,
            ms = self.elapsed.as_millis()
        )
    }
}

type Check<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Reaches every peer of `config` concurrently, each bounded by `timeout`; the verdicts in
/// the order the peers are listed (databases, sources, intakes, NATS).
pub async fn connect(config: &Config, timeout: Duration) -> Vec<Verdict> {
    let checks = peers(config);
    let timed = checks.into_iter().map(|(what, check)| async move {
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, check).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            )),
        };
        Verdict {
            what,
            result,
            elapsed: started.elapsed(),
        }
    });
    futures_util::future::join_all(timed).await
}

/// Every peer the config names, with its check.
fn peers(config: &Config) -> Vec<(String, Check<'_>)> {
    let mut all: Vec<(String, Check<'_>)> = Vec::new();
    let directory = config.directory.database_url.as_deref();
    if let Some(url) = directory {
        all.push(("directory database".into(), Box::pin(database(url, true))));
    }
    if let Some(url) = config.call_log.database_url.as_deref()
        && Some(url) != directory
    {
        all.push((
            "call_log database (history, callbacks)".into(),
            Box::pin(database(url, false)),
        ));
    }
    for source in &config.sources {
        let source = source.get_ref();
        let what = format!(
            "source {} ({})",
            source.settings.name,
            source.adapter.kind()
        );
        match source.adapter.build(&config.base) {
            Ok(adapter) => all.push((
                what,
                Box::pin(async move {
                    match adapter.probe_boxed().await {
                        Some(result) => result.map_err(|e| e.to_string()),
                        None => Ok("nothing to reach (read at start-up)".into()),
                    }
                }),
            )),
            Err(error) => {
                let error = error.to_string();
                all.push((what, Box::pin(async move { Err(error) })));
            }
        }
    }
    match crate::config::intakes_from(config) {
        Ok(intakes) => {
            for (i, ami) in intakes.ami.into_iter().enumerate() {
                let what = format!("ami[{i}] {} {}", ami.name, ami.address);
                all.push((
                    what,
                    Box::pin(async move {
                        crate::telephony::ami::probe(&ami)
                            .await
                            .map(|banner| format!("logged in ({banner})"))
                            .map_err(|e| e.to_string())
                    }),
                ));
            }
            for (i, esl) in intakes.esl.into_iter().enumerate() {
                let what = format!("esl[{i}] {} {}", esl.name, esl.address);
                all.push((
                    what,
                    Box::pin(async move {
                        crate::telephony::esl::probe(&esl)
                            .await
                            .map(|()| "authenticated".to_owned())
                            .map_err(|e| e.to_string())
                    }),
                ));
            }
            for (i, dialog) in intakes.dialog.into_iter().enumerate() {
                let what = format!("dialog[{i}] {} {}", dialog.name, dialog.pbx);
                all.push((
                    what,
                    Box::pin(async move {
                        crate::telephony::dialog::probe(&dialog)
                            .await
                            .map(|status| format!("answered OPTIONS: {status}"))
                            .map_err(|e| e.to_string())
                    }),
                ));
            }
        }
        Err(error) => {
            let error = format!("{error:#}");
            all.push(("intakes".into(), Box::pin(async move { Err(error) })));
        }
    }
    if let Some(cluster) = &config.cluster {
        let mut cluster = cluster.get_ref().clone();
        let resolved = cluster.resolve(&config.base).map_err(|e| format!("{e:#}"));
        for url in cluster.nats.clone() {
            // Credentials in the URL stay out of the report.
            let shown = match url.split_once("://") {
                Some((scheme, rest)) => {
                    format!("{scheme}://{}", rest.rsplit('@').next().unwrap_or(rest))
                }
                None => url.clone(),
            };
            let one = crate::cluster::ClusterConfig {
                nats: vec![url],
                ..cluster.clone()
            };
            let resolved = resolved.clone();
            all.push((
                format!("nats {shown}"),
                Box::pin(async move {
                    resolved?;
                    crate::cluster::probe(&one)
                        .await
                        .map_err(|e| format!("{e:#}"))
                }),
            ));
        }
    }
    all
}

/// Connects and runs a trivial query; for the directory, also whether the schema is migrated.
async fn database(url: &str, directory: bool) -> Result<String, String> {
    let client = crate::db::connect(url).await.map_err(|e| chain(&e))?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| format!("SELECT 1: {}", chain(&e)))?;
    let latest = crate::db::MIGRATIONS.len();
    let applied = crate::db::applied(&client).await.map_err(|e| chain(&e))?;
    match applied {
        Some(v) if usize::try_from(v).is_ok_and(|v| v >= latest) => {
            Ok(format!("connected, schema at version {v} (up to date)"))
        }
        Some(v) if directory => Err(format!(
            "connected, but the schema is at version {v} of {latest}: run `screenpop migrate`"
        )),
        None if directory => {
            Err("connected, but the schema is not migrated: run `screenpop migrate`".to_owned())
        }
        Some(v) => Ok(format!(
            "connected, schema at version {v} of {latest}: run `screenpop migrate` on it"
        )),
        None => Ok("connected (no screenpop schema: run `screenpop migrate` on it)".into()),
    }
}

/// An error and its causes on one line (`cannot connect to PostgreSQL: db error: FATAL:
/// database "x" does not exist`), each cause once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let shown = c.to_string();
        if !text.ends_with(&shown) {
            text = format!("{text}: {shown}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_peer() {
        let v = Verdict {
            what: "directory database".into(),
            result: Err("error connecting to server:\nrefused".into()),
            elapsed: Duration::from_millis(12),
        };
        assert!(!v.ok());
        assert_eq!(
            v.line(20),
            "FAIL directory database       12 ms  error connecting to server: refused"
        );
    }
}
