//! The agent page: `/` and its assets, compiled into the binary (no CDN, no build step, nothing
//! downloaded at run time), so the page works in a call-center LAN with no way out.
//!
//! Assets are served under versioned names, `/assets/app.<hash>.js`, where the hash is the
//! first 40 bits of the file's SHA-256: they are `immutable` for a year, and a new binary with a
//! changed file serves a new name. `/` itself is `no-cache` and names the current files. The
//! page's Content-Security-Policy allows scripts and styles from the daemon only (no inline
//! script, no `eval`), WebSocket and `fetch` to the daemon only, and no framing.
//!
//! What the page does is in `page/app.js`; the protocol it speaks is docs/protocol.md.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

/// `/`: placeholders `{{app.js}}` and the like are replaced by the versioned asset paths.
const INDEX: &str = include_str!("page/index.html");

/// The assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("page/app.css"),
    ),
    ("icon.svg", "image/svg+xml", include_bytes!("page/icon.svg")),
];

/// The page's policy: everything from the daemon itself, nothing inline.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's policy in a cluster: [`CSP`], with the WebSocket (and HTTP) origins of the
/// other nodes' pages added to `connect-src`, so the page can move there. Only well-formed
/// origins (`http[s]://host[:port]`) are added.
pub fn csp(nodes: &[String]) -> String {
    let mut extra = String::new();
    for url in nodes {
        let Some((scheme, rest)) = url.split_once("://") else {
            continue;
        };
        let host = rest.split('/').next().unwrap_or_default();
        let safe = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        let ws = match scheme {
            "https" => "wss",
            "http" => "ws",
            _ => continue,
        };
        if safe {
            extra.push_str(&format!(" {scheme}://{host} {ws}://{host}"));
        }
    }
    CSP.replace("connect-src 'self'", &format!("connect-src 'self'{extra}"))
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

struct Built {
    index: String,
    /// Versioned file name → (content type, bytes).
    files: HashMap<String, (&'static str, &'static [u8])>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut index = INDEX.to_owned();
        let mut files = HashMap::new();
        for &(name, content_type, bytes) in ASSETS {
            let versioned = versioned(name, bytes);
            index = index.replace(&format!("{{{{{name}}}}}"), &format!("/assets/{versioned}"));
            files.insert(versioned, (content_type, bytes));
        }
        Built { index, files }
    })
}

/// `app.js` → `app.0123456789.js`.
fn versioned(name: &str, bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    let hash = hex::encode(&digest[..5]);
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

/// The versioned path of an asset (`/assets/app.<hash>.js`), for tests and links.
pub fn asset_path(name: &str) -> Option<String> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, _, bytes)| format!("/assets/{}", versioned(n, bytes)))
}

/// `GET /` for a single node (and the tests' scripted servers).
pub async fn index() -> Response {
    page(&[])
}

/// `GET /` on the daemon: in a cluster, the page may also connect to the other nodes.
pub async fn index_in(
    axum::extract::State(state): axum::extract::State<super::AppState>,
) -> Response {
    let nodes = state
        .cluster
        .as_ref()
        .map(|c| c.page_urls())
        .unwrap_or_default();
    page(&nodes)
}

fn page(nodes: &[String]) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        built().index.clone(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let csp = csp(nodes);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(CSP)),
    );
    secure(headers);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /assets/{file}`: only the current versioned names exist.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some(&(content_type, bytes)) = built().files.get(&file) else {
        let mut response = (StatusCode::NOT_FOUND, "no such asset").into_response();
        secure(response.headers_mut());
        return response;
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    secure(headers);
    response
}

fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_every_asset_by_version_and_has_no_inline_script() {
        let b = built();
        for &(name, _, _) in ASSETS {
            let path = asset_path(name).expect("listed");
            assert!(b.index.contains(&path), "{name} not linked as {path}");
            assert!(b.files.contains_key(path.trim_start_matches("/assets/")));
        }
        assert!(!b.index.contains("{{"), "a placeholder was left");
        // Every <script> has a src: the CSP forbids inline code.
        for part in b.index.split("<script").skip(1) {
            assert!(
                part.trim_start().starts_with("src="),
                "inline script: {part}"
            );
        }
        // No inline event handlers (` onclick=` and the like).
        for (i, _) in b.index.match_indices(" on") {
            let rest = &b.index[i + 3..];
            let word = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            assert!(!rest[word..].starts_with('='), "inline handler at {i}");
        }
        assert!(!CSP.contains("unsafe"));
        let cluster = csp(&[
            "https://node-b.example.com:8443/".into(),
            "http://10.0.0.7".into(),
            "https://evil.example; script-src *".into(),
            "ftp://x".into(),
        ]);
        assert!(
            cluster.contains("connect-src 'self' https://node-b.example.com:8443 wss://node-b.example.com:8443 http://10.0.0.7 ws://10.0.0.7;"),
            "{cluster}"
        );
        assert!(
            !cluster.contains("evil") && !cluster.contains("ftp"),
            "{cluster}"
        );
    }
}
