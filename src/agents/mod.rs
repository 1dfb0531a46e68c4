//! Agents and their tokens: who may see which extensions' calls.
//!
//! Tokens are never stored, only their SHA-256; a presented token is hashed and looked up.
//! Agents come from the config and, with `[directory] database_url`, from the `agents` table,
//! kept fresh by LISTEN/NOTIFY (`agents::sync`), and the config's are replaced on a reload.
//! Every change bumps a generation that signed-in sessions watch ([`Agents::changes`]): an
//! agent removed (or whose token changed) is signed out, one whose extensions, name or roles
//! changed is re-routed at once.

mod section;
pub(crate) mod sync;
mod token;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

pub use section::AgentConfig;
pub use token::TokenHash;

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Agent {
    /// The agent's id.
    pub id: String,
    /// The name shown on the page.
    pub name: String,
    /// The extensions whose calls the agent sees.
    pub extensions: Vec<String>,
    /// Roles (groups) that open restricted profile sections, e.g. `credit`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Agent {
    /// The one authorisation rule for every agent action on a call (pick, dismiss, notes,
    /// callbacks): the call rang at one of the agent's extensions. `rang` lists the extensions
    /// the call rang at. Callers answer "not yours" and "does not exist" alike, so that an
    /// agent cannot probe other agents' call ids.
    pub fn rang_at<'a>(&self, rang: impl IntoIterator<Item = &'a str>) -> bool {
        rang.into_iter()
            .any(|ext| self.extensions.iter().any(|own| own == ext))
    }
}

/// Agents as listed by one source (the config, the table), with their token hashes.
type Listed = Vec<(TokenHash, Agent)>;

/// Every agent, by token hash and by extension: the fixed ones (from the config) and, when
/// the agents table is used, the ones loaded from it, replaced as a whole on every change.
#[derive(Debug)]
pub struct Agents {
    /// The config's agents, then the table's.
    sources: RwLock<(Listed, Listed)>,
    table: RwLock<Table>,
    generation: watch::Sender<u64>,
}

impl Default for Agents {
    fn default() -> Self {
        Agents::new([])
    }
}

#[derive(Debug, Default)]
struct Table {
    by_token: HashMap<TokenHash, Arc<Agent>>,
    extensions: HashSet<String>,
    /// The first agent listed for each extension.
    by_extension: HashMap<String, Arc<Agent>>,
}

impl Table {
    fn build<'a>(agents: impl IntoIterator<Item = &'a (TokenHash, Agent)>) -> Table {
        let mut table = Table::default();
        for (hash, agent) in agents {
            table.extensions.extend(agent.extensions.iter().cloned());
            // The first entry for a token wins: config agents come first.
            let agent = table
                .by_token
                .entry(*hash)
                .or_insert_with(|| Arc::new(agent.clone()))
                .clone();
            for ext in &agent.extensions {
                table
                    .by_extension
                    .entry(ext.clone())
                    .or_insert_with(|| agent.clone());
            }
        }
        table
    }
}

impl Agents {
    /// Builds the table from fixed `(token hash, agent)` pairs (the config's).
    pub fn new(agents: impl IntoIterator<Item = (TokenHash, Agent)>) -> Self {
        let fixed: Vec<_> = agents.into_iter().collect();
        let table = RwLock::new(Table::build(&fixed));
        Agents {
            sources: RwLock::new((fixed, Vec::new())),
            table,
            generation: watch::Sender::new(0),
        }
    }

    /// Replaces the loaded (non-fixed) agents; fixed agents keep precedence for their tokens.
    pub fn replace_loaded(&self, loaded: Vec<(TokenHash, Agent)>) {
        self.rebuild(|sources| sources.1 = loaded);
    }

    /// Replaces the fixed agents (the config's, on a reload).
    pub fn replace_fixed(&self, fixed: Vec<(TokenHash, Agent)>) {
        self.rebuild(|sources| sources.0 = fixed);
    }

    fn rebuild(
        &self,
        change: impl FnOnce(&mut (Vec<(TokenHash, Agent)>, Vec<(TokenHash, Agent)>)),
    ) {
        {
            let mut sources = self.sources.write().unwrap_or_else(|p| p.into_inner());
            change(&mut sources);
            let table = Table::build(sources.0.iter().chain(sources.1.iter()));
            *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Notified after every change of the agents.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The agent a token hash belongs to now.
    pub fn by_hash(&self, hash: &TokenHash) -> Option<Arc<Agent>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_token
            .get(hash)
            .cloned()
    }

    /// The agent a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        self.by_hash(&TokenHash::of(token))
    }

    /// Whether some agent has this extension.
    pub fn has_extension(&self, extension: &str) -> bool {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .extensions
            .contains(extension)
    }

    /// The agent an extension belongs to (the first listed, if several share it).
    pub fn by_extension(&self, extension: &str) -> Option<Arc<Agent>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_extension
            .get(extension)
            .cloned()
    }

    /// How many agents there are.
    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_token
            .len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_acts_only_on_calls_that_rang_at_its_extensions() {
        let alice = Agent {
            id: "alice".into(),
            name: "Alice".into(),
            extensions: vec!["1001".into(), "1003".into()],
            roles: Vec::new(),
        };
        assert!(alice.rang_at(["1002", "1003"]));
        assert!(!alice.rang_at(["1002"]));
        assert!(!alice.rang_at([]));
        // Exact match only: no prefix or suffix matches.
        assert!(!alice.rang_at(["100", "10011"]));
    }
}
