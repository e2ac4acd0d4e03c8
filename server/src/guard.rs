//! Who may drive the studio: the checks every request passes before any route sees it.
//!
//! - **Host.** A browser tricked by DNS rebinding (a hostile name resolving to 127.0.0.1) sends
//!   that name as `Host`: on a loopback bind only the loopback names (and `[security]
//!   allowed_hosts`) are served, so such a page reads and changes nothing.
//! - **Cross-site requests.** A page on another site can make the browser send requests to us
//!   (forms, `fetch` in no-cors mode, `<img>`). Browsers say where a request comes from
//!   (`Sec-Fetch-Site`, `Origin`): a state-changing request from another site is refused, and so
//!   is any cross-site request that is not a top-level navigation (a link to the studio still
//!   opens it). Clients that are not browsers send neither header and are not affected.
//! - **Access token.** Bound to a non-loopback address, the studio requires a token (`[auth]
//!   token` or `HALLO2_TOKEN`): `Authorization: Bearer …` for API clients, or the HttpOnly
//!   cookie the `/login` form sets for a browser. Without a token it refuses to start.
//! - **Response headers.** `nosniff`, `frame-ancestors 'self'`, same-origin resource policy.

use std::net::SocketAddr;
use std::sync::Arc;

use app::types::ErrorBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie the login form sets.
pub const TOKEN_COOKIE: &str = "hallo2_token";
/// The environment variable that sets the token (over `[auth] token`).
pub const ENV_TOKEN: &str = "HALLO2_TOKEN";
/// Paths served without the token: the login form and liveness/readiness probes.
const OPEN_PATHS: &[&str] = &["/login", "/health/live", "/health/ready", "/favicon.svg"];

/// What the guard checks requests against.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPolicy {
    /// Host names (no port) requests may name; empty: any (a non-loopback bind behind its token).
    pub hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) besides the studio's own that may send state-changing
    /// requests.
    pub origins: Vec<String>,
    pub token: Option<String>,
}

/// Why the studio will not start with this access setup.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "the studio binds {bind}, which is not a loopback address, and has no access token: set [auth] token in the config or {ENV_TOKEN}, or bind 127.0.0.1"
)]
pub struct NoToken {
    pub bind: SocketAddr,
}

impl AccessPolicy {
    /// The policy for a server bound to `bind`, with the config's extra hosts and origins and
    /// token. A non-loopback bind without a token is refused.
    pub fn new(
        bind: SocketAddr,
        extra_hosts: &[String],
        origins: &[String],
        token: Option<String>,
    ) -> Result<Self, NoToken> {
        let token = token.filter(|t| !t.trim().is_empty());
        let loopback = bind.ip().is_loopback();
        if !loopback && token.is_none() {
            return Err(NoToken { bind });
        }
        let mut hosts: Vec<String> = extra_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        if loopback {
            hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
        }
        Ok(Self {
            hosts,
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            token,
        })
    }

    /// Whether `host` (a `Host` header: name and optional port) may be served.
    fn host_allowed(&self, host: &str) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let name = host_name(host).to_ascii_lowercase();
        self.hosts.contains(&name)
    }

    /// Whether the request comes from another site (by the browser's own account).
    fn cross_site(&self, headers: &HeaderMap) -> bool {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(site) = text("sec-fetch-site") {
            return !matches!(site, "same-origin" | "none");
        }
        // Older browsers: the Origin of a state-changing request.
        match (text("origin"), text("host")) {
            (Some(origin), Some(host)) => {
                let origin = origin.trim_end_matches('/').to_ascii_lowercase();
                let own = origin
                    .split_once("://")
                    .is_some_and(|(_, authority)| authority == host.to_ascii_lowercase());
                !own && !self.origins.contains(&origin)
            }
            (Some(origin), None) => !self.origins.contains(&origin.to_ascii_lowercase()),
            _ => false,
        }
    }

    /// Whether a cross-site request is one of the allowed origins anyway.
    fn allowed_origin(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| {
                self.origins
                    .contains(&o.trim_end_matches('/').to_ascii_lowercase())
            })
    }

    /// Whether the request carries the token (bearer header or the login cookie).
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| same(t.trim(), token));
        bearer || cookie(headers, TOKEN_COOKIE).is_some_and(|t| same(&t, &hex(token)))
    }
}

/// The cookie holds the token in hex: any token is a valid cookie value.
fn hex(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The name part of a `Host` value (`[::1]:8501` → `[::1]`, `a.b:80` → `a.b`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// A cookie's value.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Compares without stopping at the first difference (the time says nothing of the token).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The studio's one error shape ([`ErrorBody`], as `ApiError` answers).
fn refuse(status: StatusCode, kind: &str, message: &str) -> Response {
    crate::metrics::refused(kind);
    let body = ErrorBody {
        error: message.to_string(),
        detail: message.to_string(),
        kind: kind.to_string(),
        field: None,
    };
    (status, axum::Json(body)).into_response()
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The guard, as axum middleware (state: the policy).
pub async fn guard(
    State(policy): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok())
        && !policy.host_allowed(host)
    {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "foreign_host",
            &format!("this studio does not answer to the host name {host:?}"),
        );
    }
    let navigation =
        headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) == Some("navigate");
    let cross_site = policy.cross_site(headers) && !policy.allowed_origin(headers);
    if cross_site && (is_state_changing(request.method()) || !navigation) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross_site",
            "requests from another site are refused (open the studio itself)",
        );
    }
    let path = request.uri().path();
    if !OPEN_PATHS.contains(&path) && !policy.authorised(headers) {
        if navigation && request.method() == Method::GET {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "this studio needs its access token (Authorization: Bearer …, or log in at /login)",
        );
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'self'"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// `GET /login`: the token form (a plain form; works without JavaScript).
pub async fn login_page() -> Response {
    let html = r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Hallo2 Studio: log in</title></head>
<body><main><h1>Hallo2 Studio</h1><p>This studio is reachable from the network and needs its access token.</p>
<form method="post" action="/login"><label>Access token <input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Log in</button></form></main></body></html>"#;
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// The login form's field (absent: empty, a wrong token).
#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login` (form `token=…`): the right token sets the HttpOnly cookie and goes to the
/// studio; a wrong one is 401.
pub async fn login(
    State(policy): State<Arc<AccessPolicy>>,
    axum::Form(LoginForm { token }): axum::Form<LoginForm>,
) -> Response {
    match &policy.token {
        Some(expected) if same(&token, expected) => {
            let cookie = format!(
                "{TOKEN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000",
                hex(&token)
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/".to_string()),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response()
        }
        Some(_) => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "wrong access token",
        ),
        None => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> AccessPolicy {
        AccessPolicy::new("127.0.0.1:8501".parse().unwrap(), &[], &[], None).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_names_only_and_a_token_off_loopback() {
        let p = loopback();
        for host in [
            "127.0.0.1:8501",
            "localhost:8501",
            "LOCALHOST",
            "[::1]:8501",
        ] {
            assert!(p.host_allowed(host), "{host}");
        }
        for host in ["evil.example:8501", "127.0.0.1.evil.example", "[::2]:8501"] {
            assert!(!p.host_allowed(host), "{host}");
        }
        let open = "0.0.0.0:8501".parse().unwrap();
        assert_eq!(
            AccessPolicy::new(open, &[], &[], None),
            Err(NoToken { bind: open })
        );
        assert!(AccessPolicy::new(open, &[], &[], Some("  ".into())).is_err());
        let p = AccessPolicy::new(open, &[], &[], Some("s3cret".into())).unwrap();
        assert!(
            p.host_allowed("studio.lan:8501"),
            "any name behind the token"
        );
        assert!(!p.authorised(&HeaderMap::new()));
        assert!(p.authorised(&headers(&[("authorization", "Bearer s3cret")])));
        let cookie = format!("a=b; hallo2_token={}", hex("s3cret"));
        assert!(p.authorised(&headers(&[("cookie", &cookie)])));
        assert!(!p.authorised(&headers(&[("cookie", "hallo2_token=s3cret")])));
        assert!(!p.authorised(&headers(&[("authorization", "Bearer s3cre")])));
    }

    #[test]
    fn cross_site_by_fetch_metadata_or_origin() {
        let p = loopback();
        assert!(!p.cross_site(&HeaderMap::new()), "curl and the old client");
        assert!(!p.cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(p.cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(p.cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        let own = [
            ("origin", "http://127.0.0.1:8501"),
            ("host", "127.0.0.1:8501"),
        ];
        assert!(!p.cross_site(&headers(&own)));
        let other = [
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8501"),
        ];
        assert!(p.cross_site(&headers(&other)));
        let allowed = AccessPolicy::new(
            "127.0.0.1:8501".parse().unwrap(),
            &[],
            &["https://tools.example/".into()],
            None,
        )
        .unwrap();
        assert!(allowed.allowed_origin(&headers(&[("origin", "https://tools.example")])));
    }
}
