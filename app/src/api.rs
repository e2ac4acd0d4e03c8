//! The UI's operations as Leptos server functions: one definition for both sides, typed
//! arguments and results, errors as values ([`ErrorBody`]: kind and field). On the server each
//! one calls the studio's service layer through [`Studio`] (provided in the context by the
//! `server` crate, which owns the model and the jobs); this crate never sees either.
//!
//! Every function also serves a plain HTML form (no JavaScript): the server then answers with
//! a redirect, to the page the action leads to, or back to the form's page with the error in
//! the query (`__err`, read by [`form_error`]).

use leptos::prelude::*;
use server_fn::codec::{MultipartData, MultipartFormData};

use crate::jobs::{AudioPreview, JobParams, JobRecord, PreflightView};
use crate::types::{BackendState, BackendStatus, ErrorBody};

impl server_fn::error::FromServerFnError for ErrorBody {
    type Encoder = server_fn::codec::JsonEncoding;

    fn from_server_fn_error(value: server_fn::error::ServerFnErrorErr) -> Self {
        let message = value.to_string();
        Self {
            detail: message.clone(),
            error: message,
            kind: "network".into(),
            field: None,
        }
    }
}

/// The server's side of the operations (`server::service`), as the server functions call it.
#[cfg(feature = "ssr")]
pub mod ssr {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;

    use crate::jobs::{AudioPreview, JobParams, JobRecord, PreflightView};
    use crate::types::{BackendState, BackendStatus, ErrorBody};

    /// A refusal: the HTTP status to answer with, and the body.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Failure {
        pub status: u16,
        pub body: ErrorBody,
    }

    pub type Reply<T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send>>;
    pub type Form = multer::Multipart<'static>;

    /// The studio's operations (implemented by the server's service layer).
    pub trait Operations: Send + Sync + 'static {
        fn submit(&self, form: Form) -> Reply<JobRecord>;
        fn preflight_image(&self, form: Form) -> Reply<PreflightView>;
        fn preflight_audio(&self, form: Form) -> Reply<AudioPreview>;
        fn job(&self, id: &str) -> Result<JobRecord, Failure>;
        fn jobs(&self) -> Vec<JobRecord>;
        fn cancel(&self, id: &str) -> Reply<JobRecord>;
        fn delete(&self, id: &str) -> Reply<()>;
        fn rerun(&self, id: &str, params: Option<JobParams>) -> Reply<JobRecord>;
        fn backend(&self) -> BackendStatus;
        fn reload(&self) -> Reply<BackendState>;
    }

    /// The operations in the context of every page render and server function call.
    #[derive(Clone)]
    pub struct Studio(pub Arc<dyn Operations>);

    pub(super) fn studio() -> Result<Studio, ErrorBody> {
        leptos::prelude::use_context::<Studio>().ok_or_else(|| ErrorBody {
            error: "the studio's operations are not in the context".into(),
            detail: "the studio's operations are not in the context".into(),
            kind: "internal".into(),
            field: None,
        })
    }

    /// The failure's body, with its status set on the response; a plain form's answer stays
    /// the redirect back to its page (with the error in the query).
    pub(super) fn refuse(f: Failure) -> ErrorBody {
        if !from_plain_form()
            && let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>()
            && let Ok(status) = http::StatusCode::from_u16(f.status)
        {
            response.set_status(status);
        }
        f.body
    }

    /// Whether the call came from a plain HTML form (no JavaScript): it asks for HTML.
    pub(super) fn from_plain_form() -> bool {
        leptos::prelude::use_context::<http::request::Parts>().is_some_and(|parts| {
            parts
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"))
        })
    }

    /// Sends a plain form's browser to `path` (a JavaScript caller handles the result itself).
    pub(super) fn redirect_plain_form(path: &str) {
        if from_plain_form() {
            leptos_axum::redirect(path);
        }
    }
}

#[cfg(feature = "ssr")]
use ssr::{redirect_plain_form, refuse, studio};

#[cfg(feature = "ssr")]
fn no_form() -> ErrorBody {
    let message = "expected a multipart form".to_string();
    ErrorBody {
        detail: message.clone(),
        error: message,
        kind: "bad_form".into(),
        field: None,
    }
}

/// Queues a job from the studio's form (multipart: `image_file`, `audio_file`, parameters);
/// a plain form lands on the new job's page.
#[server(prefix = "/api/fn", endpoint = "submit", input = MultipartFormData)]
pub async fn submit_job(data: MultipartData) -> Result<JobRecord, ErrorBody> {
    let form = data.into_inner().ok_or_else(no_form)?;
    let job = studio()?.0.submit(form).await.map_err(refuse)?;
    redirect_plain_form(&format!("/jobs/{}", job.id));
    Ok(job)
}

/// The face pre-flight of a portrait (multipart `image_file`, optional `face_expand_ratio`).
#[server(prefix = "/api/fn", endpoint = "preflight_image", input = MultipartFormData)]
pub async fn preflight_image(data: MultipartData) -> Result<PreflightView, ErrorBody> {
    let form = data.into_inner().ok_or_else(no_form)?;
    studio()?.0.preflight_image(form).await.map_err(refuse)
}

/// How speech decodes (multipart `audio_file`): duration, format, waveform.
#[server(prefix = "/api/fn", endpoint = "preflight_audio", input = MultipartFormData)]
pub async fn preflight_audio(data: MultipartData) -> Result<AudioPreview, ErrorBody> {
    let form = data.into_inner().ok_or_else(no_form)?;
    studio()?.0.preflight_audio(form).await.map_err(refuse)
}

/// One job's record.
#[server(prefix = "/api/fn", endpoint = "job")]
pub async fn get_job(id: String) -> Result<JobRecord, ErrorBody> {
    studio()?.0.job(&id).map_err(refuse)
}

/// Every job, newest first.
#[server(prefix = "/api/fn", endpoint = "jobs")]
pub async fn list_jobs() -> Result<Vec<JobRecord>, ErrorBody> {
    Ok(studio()?.0.jobs())
}

/// Cancels a waiting or running job; a plain form goes back to its page.
#[server(prefix = "/api/fn", endpoint = "cancel")]
pub async fn cancel_job(id: String) -> Result<JobRecord, ErrorBody> {
    studio()?.0.cancel(&id).await.map_err(refuse)
}

/// Deletes a finished job; a plain form goes to the job list.
#[server(prefix = "/api/fn", endpoint = "delete")]
pub async fn delete_job(id: String) -> Result<(), ErrorBody> {
    studio()?.0.delete(&id).await.map_err(refuse)?;
    redirect_plain_form("/jobs");
    Ok(())
}

/// The re-run form's fields, as text (empty: the default); `same` set: the old job's
/// parameters and seed, the other fields ignored.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RerunFields {
    #[serde(default)]
    pub same: Option<String>,
    #[serde(default)]
    pub pose_weight: Option<String>,
    #[serde(default)]
    pub face_weight: Option<String>,
    #[serde(default)]
    pub lip_weight: Option<String>,
    #[serde(default)]
    pub cfg_scale: Option<String>,
    #[serde(default)]
    pub face_expand_ratio: Option<String>,
    #[serde(default)]
    pub steps: Option<String>,
    #[serde(default)]
    pub seed: Option<String>,
    #[serde(default)]
    pub separate_vocals: Option<String>,
}

impl RerunFields {
    /// The parameters the fields ask for (None: the same as before); a field of the wrong
    /// type is refused with its name (ranges are the service's).
    pub fn params(&self) -> Result<Option<JobParams>, crate::jobs::ParamError> {
        if self.same.is_some() {
            return Ok(None);
        }
        let mut params = JobParams {
            use_cache: true,
            ..JobParams::default()
        };
        let fields = [
            ("pose_weight", &self.pose_weight),
            ("face_weight", &self.face_weight),
            ("lip_weight", &self.lip_weight),
            ("cfg_scale", &self.cfg_scale),
            ("face_expand_ratio", &self.face_expand_ratio),
            ("steps", &self.steps),
            ("seed", &self.seed),
            ("separate_vocals", &self.separate_vocals),
        ];
        for (name, value) in fields {
            if let Some(text) = value {
                params.set_field(name, text)?;
            }
        }
        Ok(Some(params))
    }
}

/// A new job from a finished one's inputs; a plain form lands on the new job's page.
#[server(prefix = "/api/fn", endpoint = "rerun")]
pub async fn rerun_job(id: String, fields: RerunFields) -> Result<JobRecord, ErrorBody> {
    let params = fields.params().map_err(|e| {
        refuse(ssr::Failure {
            status: 422,
            body: ErrorBody {
                detail: e.message.clone(),
                error: e.message,
                kind: "bad_parameter".into(),
                field: Some(e.field.into()),
            },
        })
    })?;
    let job = studio()?.0.rerun(&id, params).await.map_err(refuse)?;
    redirect_plain_form(&format!("/jobs/{}", job.id));
    Ok(job)
}

/// The backend's state and stages.
#[server(prefix = "/api/fn", endpoint = "backend")]
pub async fn current_backend() -> Result<BackendStatus, ErrorBody> {
    Ok(studio()?.0.backend())
}

/// Loads again after a failure (or the first time with `load = "lazy"`); a plain form goes
/// back to its page.
#[server(prefix = "/api/fn", endpoint = "reload")]
pub async fn reload_backend() -> Result<BackendState, ErrorBody> {
    studio()?.0.reload().await.map_err(refuse)
}

/// The error a server function put in this page's query after a plain form's post
/// (`?__path=…&__err=…`), and the function's path.
pub fn form_error() -> Option<(String, ErrorBody)> {
    let query = leptos_router::hooks::use_query_map();
    query.with_untracked(|q| {
        let path = q.get("__path")?;
        let err = q.get("__err")?;
        Some((
            path,
            server_fn::error::ServerFnUrlError::<ErrorBody>::decode_err(&err),
        ))
    })
}

/// [`form_error`] when it came from the server function at `url` (e.g. `SubmitJob::PATH`).
pub fn form_error_of(url: &str) -> Option<ErrorBody> {
    form_error().filter(|(path, _)| path == url).map(|(_, e)| e)
}
