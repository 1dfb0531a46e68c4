//! `type = "http"`: a section from an HTTP JSON API (a SaaS ERP, a CRM, a team's service).
//!
//! The URL is a template whose `{customer_id}`, `{account}`, `{name}`, `{company}`, `{number}`
//! placeholders are filled with the customer's fields, percent-encoded; a `POST` body template
//! gets them JSON-escaped. The answer must be JSON; `pointer` (RFC 6901) picks a part of it.
//! A 404 means "nothing on file" (null data); any other non-2xx status is an error. Headers and
//! a bearer token come from the config or, better, the environment. TLS is rustls with the
//! WebPKI roots, plus `ca_file` for a private CA.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use super::{Section, Source, SourceError, Who, check_template, expand};
use crate::secret::Secret;

/// Largest answer accepted, bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET (no body).
    #[default]
    Get,
    /// POST with `body`.
    Post,
}

/// `[[sources]] type = "http"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The URL template, e.g. `https://erp.example/api/customers/{account}/balance`.
    pub url: String,
    /// `GET` or `POST`.
    #[serde(default)]
    pub method: Method,
    /// For `POST`: a JSON body template, e.g. `{"customer": "{customer_id}"}` (values are
    /// JSON-escaped into the quotes you write).
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON pointer to the part of the answer to show, e.g. `/data/balance`.
    #[serde(default)]
    pub pointer: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A bearer token sent as `Authorization: Bearer …`. Prefer `bearer_env`.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// The environment variable holding the bearer token, read at start-up.
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// A PEM file of extra CA certificates to trust (a company CA); relative to the config.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long connecting may take.
    #[serde(
        default = "default_connect_timeout",
        with = "crate::serde_ext::duration"
    )]
    pub connect_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

/// A running HTTP source.
pub struct Http {
    client: reqwest::Client,
    url: String,
    method: Method,
    body: Option<String>,
    pointer: Option<String>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// Checks the templates and builds the client; `base` resolves a relative `ca_file`.
    pub fn new(config: &HttpConfig, base: &Path) -> Result<Http, String> {
        check_template(&config.url).map_err(|e| format!("url: {e}"))?;
        let parsed = reqwest::Url::parse(&config.url.replace(['{', '}'], ""))
            .map_err(|e| format!("url: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("url: only http and https are supported".into());
        }
        if let Some(body) = &config.body {
            check_template(body).map_err(|e| format!("body: {e}"))?;
        }
        if let Some(pointer) = &config.pointer
            && !pointer.is_empty()
            && !pointer.starts_with('/')
        {
            return Err(format!(
                "pointer `{pointer}` must start with `/` (RFC 6901)"
            ));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: `{name}` is not a header name"))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("headers: the value of `{name}` is not a header value"))?;
            headers.insert(name, value);
        }
        let bearer =
            match (&config.bearer, &config.bearer_env) {
                (_, Some(var)) => Some(crate::secret::secret_from_env(var).ok_or_else(|| {
                    format!("bearer_env: environment variable `{var}` is not set")
                })?),
                (Some(secret), None) => Some(secret.expose().to_owned()),
                (None, None) => None,
            };
        if let Some(token) = bearer {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "bearer: the token is not a header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls(config.ca_file.as_deref().map(|f| base.join(f)))?)
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("screenpop/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("client: {e}"))?;
        Ok(Http {
            client,
            url: config.url.clone(),
            method: config.method,
            body: config.body.clone(),
            pointer: config.pointer.clone().filter(|p| !p.is_empty()),
        })
    }
}

/// A reqwest client builder with screenpop's TLS (rustls, ring, WebPKI roots): what an adapter
/// that talks HTTP should start from (`reqwest::Client::builder()` alone has no TLS provider).
pub fn client_builder() -> Result<reqwest::ClientBuilder, String> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls(None)?)
        .user_agent(concat!("screenpop/", env!("CARGO_PKG_VERSION"))))
}

/// rustls with ring and the WebPKI roots, plus the PEM certificates in `ca_file`.
fn tls(ca_file: Option<PathBuf>) -> Result<rustls::ClientConfig, String> {
    crate::tls_client::client_config(ca_file.as_deref()).map_err(|e| format!("ca_file {e}"))
}

/// What [`url_escape`] escapes: all but RFC 3986 §2.3 unreserved characters.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_escape(value: &str) -> String {
    utf8_percent_encode(value, NOT_UNRESERVED).to_string()
}

/// Escapes for the inside of a JSON string.
fn json_escape(value: &str) -> String {
    let quoted = Value::String(value.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

impl Source for Http {
    async fn probe(&self) -> Option<Result<String, SourceError>> {
        // The URL's origin: the template's path needs a customer, any HTTP answer will do.
        let origin = reqwest::Url::parse(&self.url.replace(['{', '}'], ""))
            .map(|u| u.origin().ascii_serialization())
            .map_err(|e| SourceError::Refused(format!("url: {e}")));
        let result = async {
            let origin = origin?;
            let response = self.client.get(&origin).send().await.map_err(|e| {
                SourceError::Unreachable(if e.is_connect() {
                    format!("connection to {origin} failed")
                } else if e.is_timeout() {
                    format!("{origin} did not answer in time")
                } else {
                    format!("request to {origin} failed")
                })
            })?;
            Ok(format!(
                "{origin} answered HTTP {}",
                response.status().as_u16()
            ))
        };
        Some(result.await)
    }

    async fn fetch(&self, who: &Who) -> Result<Section, SourceError> {
        let url = expand(&self.url, who, url_escape)?;
        let request = match self.method {
            Method::Get => self.client.get(url),
            Method::Post => {
                let body = match &self.body {
                    Some(template) => expand(template, who, json_escape)?,
                    None => String::new(),
                };
                self.client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
            }
        };
        let mut response = request.send().await.map_err(|e| {
            SourceError::Unreachable(if e.is_connect() {
                "connection failed".into()
            } else {
                "request failed".into()
            })
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Value::Null);
        }
        if !status.is_success() {
            return Err(SourceError::Refused(format!("HTTP {}", status.as_u16())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(SourceError::BadAnswer("answer too large".into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| SourceError::Unreachable("answer cut short".into()))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(SourceError::BadAnswer("answer too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value =
            serde_json::from_slice(&body).map_err(|_| SourceError::BadAnswer("not JSON".into()))?;
        match &self.pointer {
            None => Ok(value),
            Some(pointer) => Ok(value.pointer(pointer).cloned().unwrap_or(Value::Null)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(url_escape("A/1 ü&x"), "A%2F1%20%C3%BC%26x");
        assert_eq!(json_escape("say \"hi\"\n"), "say \\\"hi\\\"\\n");
    }

    #[test]
    fn config_errors_name_the_problem() {
        let config = |url: &str| HttpConfig {
            url: url.into(),
            method: Method::Get,
            body: None,
            pointer: None,
            headers: BTreeMap::new(),
            bearer: None,
            bearer_env: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
        };
        assert!(Http::new(&config("http://127.0.0.1/{account}"), Path::new(".")).is_ok());
        assert!(
            Http::new(&config("http://x/{acct}"), Path::new("."))
                .is_err_and(|e| e.contains("unknown placeholder"))
        );
        assert!(Http::new(&config("ftp://x/"), Path::new(".")).is_err());
    }
}
