//! Agents and their tokens: who may see which extensions' calls.
//!
//! Tokens are never stored, only their SHA-256; a presented token is hashed and looked up.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::TokenHash;

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Agent {
    /// The agent's id.
    pub id: String,
    /// The name shown on the page.
    pub name: String,
    /// The extensions whose calls the agent sees.
    pub extensions: Vec<String>,
}

/// Every agent, by token hash and by extension.
#[derive(Debug, Default)]
pub struct Agents {
    by_token: HashMap<TokenHash, Arc<Agent>>,
    extensions: std::collections::HashSet<String>,
}

impl Agents {
    /// Builds the table from `(token hash, agent)` pairs.
    pub fn new(agents: impl IntoIterator<Item = (TokenHash, Agent)>) -> Self {
        let mut table = Agents::default();
        for (hash, agent) in agents {
            table.extensions.extend(agent.extensions.iter().cloned());
            table.by_token.insert(hash, Arc::new(agent));
        }
        table
    }

    /// The agent a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        self.by_token.get(&TokenHash::of(token)).cloned()
    }

    /// Whether some agent has this extension.
    pub fn has_extension(&self, extension: &str) -> bool {
        self.extensions.contains(extension)
    }

    /// How many agents there are.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}
