//! The secrets a config reads from the environment (`*_env`): every variable it names must be
//! set and non-empty, checked when the file is loaded (by `check-config`, `run` and a reload
//! alike), so that an unset one is a config error at its line rather than a failure at start.
//! "Set" means what [`crate::secret::secret_from_env`] reads, the same function the intakes,
//! sources and cluster read their secrets with.

use std::path::Path;

use super::{Config, ConfigError, line_of};

/// Every `*_env` the config names: (where its section starts in the text, the key, the
/// variable).
fn named(config: &Config) -> Vec<(std::ops::Range<usize>, String, &str)> {
    let mut all = Vec::new();
    for (table, i, span, section) in config.intakes.each() {
        if let Some((field, var)) = section.secret_env() {
            all.push((span, format!("{table}[{i}].{field}"), var));
        }
    }
    for (i, pbx) in config.webhook.pbx.iter().enumerate() {
        if let Some(var) = pbx.get_ref().secret_env.as_deref() {
            all.push((pbx.span(), format!("webhook.pbx[{i}].secret_env"), var));
        }
    }
    for (i, source) in config.sources.iter().enumerate() {
        if let crate::sources::AdapterConfig::Http(http) = &source.get_ref().adapter
            && let Some(var) = http.bearer_env.as_deref()
        {
            all.push((source.span(), format!("sources[{i}].bearer_env"), var));
        }
    }
    if let Some(cluster) = &config.cluster
        && let Some(var) = cluster.get_ref().token_env.as_deref()
    {
        all.push((cluster.span(), "cluster.token_env".into(), var));
    }
    all
}

/// Refuses a config that names an unset or empty variable; every such variable is listed, each
/// at the line of its key (else of its section).
pub(super) fn check(config: &Config, text: &str, file: &Path) -> Result<(), ConfigError> {
    let mut missing: Vec<ConfigError> = named(config)
        .into_iter()
        .filter(|(_, _, var)| crate::secret::secret_from_env(var).is_none())
        .map(|(span, key, var)| {
            let field = key.rsplit('.').next().unwrap_or_default();
            // The span may be only the table's header: read on to the next header.
            let start = line_of(text, span.start);
            let line = text
                .lines()
                .skip(start - 1)
                .enumerate()
                .take_while(|(at, l)| *at == 0 || !l.trim_start().starts_with('['))
                .find(|(_, l)| {
                    l.trim_start()
                        .strip_prefix(field)
                        .is_some_and(|r| r.trim_start().starts_with('='))
                })
                .map_or(start, |(at, _)| start + at);
            ConfigError::Invalid {
                file: file.into(),
                line,
                key,
                message: format!("environment variable {var} is not set (or empty)"),
            }
        })
        .collect();
    match missing.len() {
        0 => Ok(()),
        1 => Err(missing.remove(0)),
        _ => Err(ConfigError::Several(missing)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unset_variable_is_named_at_its_line() {
        // Variables no test environment sets.
        let text = "[[ami]]\nname = \"p\"\naddress = \"h:1\"\nusername = \"u\"\nsecret_env = \"SCREENPOP_TEST_UNSET_AMI\"\n\n\
                    [[esl]]\nname = \"f\"\naddress = \"h:2\"\npassword = \"inline\"\n\n\
                    [[webhook.pbx]]\nname = \"w\"\nsecret_env = \"SCREENPOP_TEST_UNSET_HOOK\"\n\n\
                    [cluster]\nnode = \"a\"\nnats = [\"nats://127.0.0.1:4222\"]\ntoken_env = \"SCREENPOP_TEST_UNSET_NATS\"\n";
        let file = Path::new("site.toml");
        let config = Config::parse(text, file).expect("valid");
        let Err(ConfigError::Several(errors)) = check(&config, text, file) else {
            panic!("three variables are unset");
        };
        let found: Vec<(usize, String, String)> = errors
            .iter()
            .map(|e| match e {
                ConfigError::Invalid {
                    line, key, message, ..
                } => (*line, key.clone(), message.clone()),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    5,
                    "ami[0].secret_env".to_owned(),
                    "environment variable SCREENPOP_TEST_UNSET_AMI is not set (or empty)"
                        .to_owned()
                ),
                (
                    14,
                    "webhook.pbx[0].secret_env".to_owned(),
                    "environment variable SCREENPOP_TEST_UNSET_HOOK is not set (or empty)"
                        .to_owned()
                ),
                (
                    19,
                    "cluster.token_env".to_owned(),
                    "environment variable SCREENPOP_TEST_UNSET_NATS is not set (or empty)"
                        .to_owned()
                ),
            ]
        );
        let shown = ConfigError::Several(errors).to_string();
        assert_eq!(shown.lines().count(), 3, "{shown}");
        assert!(
            shown.starts_with("site.toml:5: key `ami[0].secret_env`"),
            "{shown}"
        );
        // A set variable passes: PATH is set wherever tests run.
        let set = text
            .replace("SCREENPOP_TEST_UNSET_AMI", "PATH")
            .replace("SCREENPOP_TEST_UNSET_HOOK", "PATH")
            .replace("SCREENPOP_TEST_UNSET_NATS", "PATH");
        let config = Config::parse(&set, file).expect("valid");
        check(&config, &set, file).expect("every variable set");
    }
}
