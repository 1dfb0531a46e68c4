//! `[[agents]]`: agents written in the config file (small sites).

use serde::Deserialize;
use toml::Spanned;

use super::TokenHash;

/// `[[agents]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// A unique id (`alice`).
    pub id: Spanned<String>,
    /// The name shown on the page.
    #[serde(default)]
    pub name: Option<String>,
    /// The extensions whose calls this agent sees.
    pub extensions: Vec<String>,
    /// Roles that open restricted profile sections (a source's `roles`), e.g. `["credit"]`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// SHA-256 of the agent's token, hex (`screenpop hash-token` prints it).
    pub token_sha256: TokenHash,
}
