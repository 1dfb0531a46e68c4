//! One-off overrides from the command line (`--set http.listen=127.0.0.1:9090`): a dotted key
//! (array elements by index: `sources.0.timeout`) and a TOML value; a bare word that is not
//! valid TOML is taken as a string.
//!
//! The file is validated on its own first, so its errors keep their lines; the overrides are
//! then applied to its tables and the result validated again, its errors naming `--set KEY`.
//! A loaded [`Config`](super::Config) remembers its overrides: a reload re-reads the file and
//! applies the same ones.

use std::str::FromStr;

use super::ConfigError;

/// One `--set KEY=VALUE`.
#[derive(Clone, PartialEq)]
pub struct Override {
    key: String,
    path: Vec<Step>,
    value: toml::Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

impl std::fmt::Debug for Override {
    // Keys only: a value may be a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--set {}=…", self.key)
    }
}

impl Override {
    /// The dotted key as given (`http.listen`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value (may be a secret: never to log).
    pub fn value(&self) -> &toml::Value {
        &self.value
    }
}

impl FromStr for Override {
    type Err = String;

    /// Parses `KEY=VALUE`; the error says what is wrong with it.
    fn from_str(arg: &str) -> Result<Override, String> {
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| format!("`{arg}` is not KEY=VALUE"))?;
        let key = key.trim();
        let path = key
            .split('.')
            .map(|part| {
                if part.is_empty()
                    || !part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    Err(format!(
                        "`{key}` is not a dotted key (`section.key`, `sources.0.timeout`)"
                    ))
                } else if let Ok(i) = part.parse::<usize>() {
                    Ok(Step::Index(i))
                } else {
                    Ok(Step::Key(part.to_owned()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !matches!(path.first(), Some(Step::Key(_))) {
            return Err(format!("`{key}` must start with a section or key name"));
        }
        let raw = raw.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        Ok(Override {
            key: key.to_owned(),
            path,
            value,
        })
    }
}

/// The `--set` overrides of a run, in order (a later one wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides(Vec<Override>);

impl Overrides {
    /// Wraps the parsed `--set` arguments.
    pub fn new(list: Vec<Override>) -> Overrides {
        Overrides(list)
    }

    /// None given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys, in order (to log: never the values).
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(Override::key).collect()
    }

    /// The file's text with the overrides applied, as TOML.
    pub(super) fn apply(&self, text: &str) -> Result<String, ConfigError> {
        let mut root = toml::Value::Table(toml::from_str::<toml::Table>(text).map_err(|e| {
            ConfigError::Override {
                key: self.keys().join(", "),
                message: e.message().to_owned(),
            }
        })?);
        for o in &self.0 {
            set(&mut root, &o.path, o.value.clone()).map_err(|message| ConfigError::Override {
                key: o.key.clone(),
                message,
            })?;
        }
        toml::to_string(&root).map_err(|e| ConfigError::Override {
            key: self.keys().join(", "),
            message: e.to_string(),
        })
    }

    /// An error in the overridden config, told as the fault of the `--set` whose key it is
    /// under (or of them all, when it is under none: the file alone was valid).
    pub(super) fn blame(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid { key, message, .. } => {
                let at = normalise(&key);
                let culprit = self.0.iter().rev().find(|o| {
                    let mine = normalise(&o.key);
                    related(&at, &mine)
                });
                match culprit {
                    Some(o) if normalise(&o.key) == at => ConfigError::Override {
                        key: o.key.clone(),
                        message,
                    },
                    Some(o) => ConfigError::Override {
                        key: o.key.clone(),
                        message: format!("key `{key}`: {message}"),
                    },
                    None => ConfigError::Override {
                        key: self.keys().join(", "),
                        message: format!("key `{key}`: {message}"),
                    },
                }
            }
            ConfigError::Several(errors) => {
                ConfigError::Several(errors.into_iter().map(|e| self.blame(e)).collect())
            }
            other => other,
        }
    }
}

/// `ami[0].secret_env` and `ami.0.secret_env` alike, as path parts.
fn normalise(key: &str) -> Vec<String> {
    // `sources[0] (crm)`: the name in parentheses is not part of the path.
    let key = key.split(' ').next().unwrap_or_default();
    key.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One path is the other or lies under it.
fn related(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn set(at: &mut toml::Value, path: &[Step], value: toml::Value) -> Result<(), String> {
    let Some((step, rest)) = path.split_first() else {
        *at = value;
        return Ok(());
    };
    let next = match (step, at) {
        (Step::Key(k), toml::Value::Table(table)) => {
            if rest.is_empty() {
                table.insert(k.clone(), value);
                return Ok(());
            }
            table
                .entry(k.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        }
        (Step::Index(i), toml::Value::Array(items)) => {
            let n = items.len();
            items
                .get_mut(*i)
                .ok_or_else(|| format!("index {i} is past the end ({n} elements)"))?
        }
        (Step::Key(k), other) => {
            return Err(format!(
                "`{k}` is under a {}, not a table",
                other.type_str()
            ));
        }
        (Step::Index(i), other) => {
            return Err(format!(
                "index {i} is under a {}, not an array",
                other.type_str()
            ));
        }
    };
    set(next, rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Overrides {
        Overrides::new(
            args.iter()
                .map(|a| a.parse().expect("an override"))
                .collect(),
        )
    }

    #[test]
    fn values_are_toml_or_else_strings() {
        let o: Override = "http.listen=127.0.0.1:9090".parse().expect("parses");
        assert_eq!(o.value, toml::Value::String("127.0.0.1:9090".into()));
        let o: Override = "sip.udp=[\"0.0.0.0:5070\"]".parse().expect("parses");
        assert_eq!(o.value.as_array().map(Vec::len), Some(1));
        let o: Override = "log.pii=true".parse().expect("parses");
        assert_eq!(o.value, toml::Value::Boolean(true));
        let o: Override = "sources.0.timeout=\"2s\"".parse().expect("parses");
        assert_eq!(
            o.path,
            [
                Step::Key("sources".into()),
                Step::Index(0),
                Step::Key("timeout".into())
            ]
        );
        assert!("http.listen".parse::<Override>().is_err(), "no `=`");
        assert!("http..listen=1".parse::<Override>().is_err());
        assert!("0.x=1".parse::<Override>().is_err());
        assert_eq!(
            format!("{o:?}"),
            "--set sources.0.timeout=…",
            "values never shown"
        );
    }

    #[test]
    fn applied_to_the_tables_by_key_and_index() {
        let text =
            "[http]\nlisten = \"127.0.0.1:8080\"\n\n[[sources]]\nname = \"a\"\ntimeout = \"1s\"\n";
        let merged = parse(&[
            "http.listen=127.0.0.1:9090",
            "sources.0.timeout=\"2s\"",
            "sip.udp=[\"0.0.0.0:5070\"]",
        ])
        .apply(text)
        .expect("applies");
        let t: toml::Table = toml::from_str(&merged).expect("TOML");
        assert_eq!(t["http"]["listen"].as_str(), Some("127.0.0.1:9090"));
        assert_eq!(t["sources"][0]["timeout"].as_str(), Some("2s"));
        assert_eq!(t["sources"][0]["name"].as_str(), Some("a"));
        assert_eq!(t["sip"]["udp"][0].as_str(), Some("0.0.0.0:5070"));
        let Err(ConfigError::Override { key, message }) =
            parse(&["sources.3.timeout=1"]).apply(text)
        else {
            panic!("no fourth source");
        };
        assert_eq!(key, "sources.3.timeout");
        assert!(message.contains("past the end"), "{message}");
        let Err(ConfigError::Override { key, .. }) = parse(&["http.listen.port=1"]).apply(text)
        else {
            panic!("a string is not a table");
        };
        assert_eq!(key, "http.listen.port");
    }

    #[test]
    fn errors_are_blamed_on_the_override_under_which_they_lie() {
        let o = parse(&["http.listen=x", "sources.0.timeout=1"]);
        let invalid = |key: &str| ConfigError::Invalid {
            file: "site.toml".into(),
            line: 3,
            key: key.into(),
            message: "bad".into(),
        };
        assert_eq!(
            o.blame(invalid("http.listen")).to_string(),
            "--set http.listen: bad"
        );
        assert_eq!(
            o.blame(invalid("sources[0].timeout")).to_string(),
            "--set sources.0.timeout: bad"
        );
        assert_eq!(
            o.blame(invalid("http")).to_string(),
            "--set http.listen: key `http`: bad"
        );
        assert_eq!(
            o.blame(invalid("sip")).to_string(),
            "--set http.listen, sources.0.timeout: key `sip`: bad"
        );
    }
}
