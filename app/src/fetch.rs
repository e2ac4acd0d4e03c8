//! Browser requests to the studio's API (hydrate only): the body as text on success, the API's
//! [`ErrorBody`] (with the field at fault) otherwise.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::types::ErrorBody;

fn error(message: String) -> ErrorBody {
    ErrorBody {
        error: message,
        kind: "network".into(),
        field: None,
    }
}

fn js_error(e: wasm_bindgen::JsValue) -> ErrorBody {
    error(e.as_string().unwrap_or_else(|| format!("{e:?}")))
}

/// A request body.
pub enum Body<'a> {
    Form(&'a web_sys::FormData),
    Json(String),
}

/// `method url` with an optional multipart form.
pub async fn send(
    method: &str,
    url: &str,
    form: Option<&web_sys::FormData>,
) -> Result<String, ErrorBody> {
    send_body(method, url, form.map(Body::Form)).await
}

/// `method url` with an optional body.
pub async fn send_body(
    method: &str,
    url: &str,
    body: Option<Body<'_>>,
) -> Result<String, ErrorBody> {
    let window = web_sys::window().ok_or_else(|| error("no window".into()))?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let headers = web_sys::Headers::new().map_err(js_error)?;
    headers
        .set("Accept", "application/json")
        .map_err(js_error)?;
    init.set_headers(&headers);
    match &body {
        Some(Body::Form(form)) => init.set_body(form),
        Some(Body::Json(text)) => {
            headers
                .set("Content-Type", "application/json")
                .map_err(js_error)?;
            init.set_body(&wasm_bindgen::JsValue::from_str(text));
        }
        None => {}
    }
    let response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(|_| error("the server could not be reached".into()))?;
    let response: web_sys::Response = response.dyn_into().map_err(js_error)?;
    let text = match response.text() {
        Ok(p) => JsFuture::from(p)
            .await
            .ok()
            .and_then(|t| t.as_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    if response.ok() {
        return Ok(text);
    }
    Err(serde_json::from_str::<ErrorBody>(&text)
        .unwrap_or_else(|_| error(format!("the server answered {}", response.status()))))
}
