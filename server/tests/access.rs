//! Who may drive the studio (`guard.rs`): pages on other sites cannot change anything or read
//! the user's files, a rebinding host name is not served, and a network bind needs its token.

mod common;

use common::{serve, tiny_config};
use reqwest::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Client, Method, StatusCode};
use server::Studio;
use server::config::{LoadMode, ServerConfig};

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn lazy_config(scratch: &std::path::Path) -> ServerConfig {
    let mut config = tiny_config(scratch);
    config.load = LoadMode::Lazy;
    config.data_dir = scratch.join("data");
    config
}

/// Every request that changes something, by each entry that offers it.
const STATE_CHANGING: &[(&str, &str)] = &[
    ("POST", "/api/backend/reload"),
    ("POST", "/api/fn/reload"),
    ("POST", "/api/v1/inference/hallo2"),
    ("POST", "/api/fn/submit"),
    ("DELETE", "/api/v1/tasks/some-job"),
    ("POST", "/api/fn/cancel"),
    ("DELETE", "/api/jobs/some-job"),
    ("POST", "/api/fn/delete"),
];

#[tokio::test]
async fn another_site_cannot_change_anything_or_read_files() {
    let scratch = tempfile::tempdir().unwrap();
    let s = serve(lazy_config(scratch.path())).await;
    let http = client();
    let backend_before = s.studio_state.backend.state().name();
    for (method, path) in STATE_CHANGING {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{path}", s.base);
        // An old browser (Origin only) and a current one (fetch metadata).
        for headers in [
            vec![(ORIGIN.as_str(), "https://evil.example")],
            vec![
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ],
            vec![("sec-fetch-site", "same-site"), ("sec-fetch-mode", "cors")],
        ] {
            let mut request = http.request(method.clone(), &url);
            for (k, v) in &headers {
                request = request.header(*k, *v);
            }
            let resp = request.send().await.unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} {headers:?}"
            );
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["kind"], "cross_site", "{body}");
        }
    }
    assert_eq!(s.studio_state.backend.state().name(), backend_before);

    // Reading: a cross-site subresource (an <img>/<video> or fetch) gets nothing; a link that
    // opens the studio still works.
    let resp = http
        .get(format!("{}/api/jobs/some-job/video", s.base))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "no-cors")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = http
        .get(&s.base)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_studio_itself_and_plain_clients_are_served() {
    let scratch = tempfile::tempdir().unwrap();
    let s = serve(lazy_config(scratch.path())).await;
    let http = client();
    let resp = http.get(&s.base).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'self'")
    );
    // Same origin (by either header) reaches the route: a job that does not exist is a 404.
    for headers in [
        vec![(ORIGIN.as_str(), s.base.as_str())],
        vec![("sec-fetch-site", "same-origin")],
        vec![],
    ] {
        let mut request = http.delete(format!("{}/api/jobs/some-job", s.base));
        for (k, v) in &headers {
            request = request.header(*k, *v);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{headers:?}");
    }
    // An allowed origin may change state too.
    let mut config = lazy_config(scratch.path());
    config.security.allowed_origins = vec!["https://tools.example".into()];
    let s = serve(config).await;
    let resp = http
        .delete(format!("{}/api/jobs/some-job", s.base))
        .header(ORIGIN, "https://tools.example")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rebinding_host_name_is_not_served() {
    let scratch = tempfile::tempdir().unwrap();
    let s = serve(lazy_config(scratch.path())).await;
    let port = s.base.rsplit(':').next().unwrap();
    let http = client();
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/", "/api/backend", "/api/v1/tasks"] {
            let resp = http
                .get(format!("{}{path}", s.base))
                .header(HOST, &host)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::MISDIRECTED_REQUEST,
                "{host} {path}"
            );
        }
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let resp = http.get(&s.base).header(HOST, &host).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
    }
    // A name the config allows.
    let mut config = lazy_config(scratch.path());
    config.security.allowed_hosts = vec!["studio.lan".into()];
    let s = serve(config).await;
    let resp = http
        .get(&s.base)
        .header(HOST, format!("studio.lan:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_network_bind_needs_a_token_and_every_request_carries_it() {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = lazy_config(scratch.path());
    config.bind = "0.0.0.0:0".parse().unwrap();
    let refused = Studio::start(config.clone())
        .err()
        .expect("no token: no start");
    assert!(refused.to_string().contains("access token"), "{refused}");

    config.auth.token = Some("correct horse; battery".into());
    let s = serve(config).await;
    let http = client();
    for (path, authorization, expected) in [
        ("/api/v1/tasks", None, StatusCode::UNAUTHORIZED),
        (
            "/api/v1/tasks",
            Some("Bearer wrong"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/api/v1/tasks",
            Some("Bearer correct horse; battery"),
            StatusCode::OK,
        ),
        // Probes stay open.
        ("/health/live", None, StatusCode::OK),
    ] {
        let mut request = http.get(format!("{}{path}", s.base));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), expected, "{path} {authorization:?}");
    }

    // A browser: the page sends it to the login form, which sets the cookie.
    let resp = http
        .get(&s.base)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/login");
    let resp = http.get(format!("{}/login", s.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("name=\"token\""));
    let login = |token: &'static str| {
        http.post(format!("{}/login", s.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    assert_eq!(
        login("nope").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = login("correct+horse%3B+battery").await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let resp = http
        .get(&s.base)
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
