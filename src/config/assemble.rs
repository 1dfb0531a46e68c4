//! From validated sections to what the components run with: the config's agents, the
//! intakes with their secrets resolved from the environment, the composer over the sources,
//! the page's settings. Shared by start-up (`daemon`) and hot reload (`reload`).

use std::sync::Arc;

use anyhow::Context as _;

use super::Config;

/// The agent page's settings from `[page]`.
pub fn page_settings(config: &Config) -> crate::push::message::PageSettings {
    crate::push::message::PageSettings {
        crm_url: config.page.crm_url.clone(),
        dispositions: config.page.dispositions.clone(),
        ring_sound: config.page.ring_sound,
        dial: !config.intakes.ami.is_empty() || !config.intakes.esl.is_empty(),
    }
}

/// The config's own agents (`[[agents]]`).
pub fn config_agents(config: &Config) -> Vec<(crate::agents::TokenHash, crate::agents::Agent)> {
    config
        .agents
        .iter()
        .map(|a| {
            let id = a.id.get_ref().clone();
            (
                a.token_sha256,
                crate::agents::Agent {
                    name: a.name.clone().unwrap_or_else(|| id.clone()),
                    id,
                    extensions: a.extensions.clone(),
                    roles: a.roles.clone(),
                },
            )
        })
        .collect()
}

pub use crate::telephony::intake::Intakes;

/// Resolves the intakes' secrets (`*_env`) and TLS files; an unset variable is an error that
/// names the intake and the variable.
pub fn intakes_from(config: &Config) -> anyhow::Result<Intakes> {
    let mut webhook = config.webhook.clone();
    for p in &mut webhook.pbx {
        let p = p.get_mut();
        let field = format!("webhook pbx `{}` secret_env", p.name);
        crate::telephony::intake::check::secret_env(
            &field,
            p.secret_env.as_deref(),
            &mut p.secret,
        )?;
    }
    config.intakes.resolve(&config.base, webhook)
}

/// The profile composer over the config's `[[sources]]`, if any.
pub fn composer_from(
    config: &Config,
    history: Option<&Arc<crate::calls::history::Store>>,
) -> anyhow::Result<Option<Arc<crate::compose::Composer>>> {
    let sources: Vec<crate::compose::SourceConfig> =
        config.sources.iter().map(|s| s.get_ref().clone()).collect();
    let mut composer =
        crate::compose::Composer::from_config(&config.compose, &sources, &config.base)
            .context("starting the data sources")?;
    if let Some(store) = history.filter(|_| config.history.enabled) {
        let source = crate::calls::history::History::new(
            store.clone(),
            &config.history,
            &config.calls.call_back_url,
        );
        composer = composer.with(&config.history.settings(), "history", Box::new(source));
    }
    Ok((!composer.is_empty()).then(|| Arc::new(composer)))
}

/// The history's store for `config`: the call log's database when there is one.
pub fn history_store(config: &Config) -> anyhow::Result<Arc<crate::calls::history::Store>> {
    let url = config
        .call_log
        .database_url
        .as_ref()
        .or(config.directory.database_url.as_ref());
    crate::calls::history::Store::new(url.map(String::as_str)).map_err(anyhow::Error::msg)
}

/// The webhook's PBXs with their secrets (those without one are left out: they can never
/// authenticate).
pub fn webhook_pbxs(
    webhook: &crate::telephony::webhook::WebhookConfig,
) -> Vec<(String, crate::secret::Secret)> {
    webhook
        .pbx
        .iter()
        .filter_map(|p| {
            let p = p.get_ref();
            Some((p.name.clone(), p.secret.clone()?))
        })
        .collect()
}
