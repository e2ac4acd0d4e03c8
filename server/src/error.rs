//! `ApiError`: the one error type of the request path, with the one status table and the one
//! JSON shape `{ "error": msg, "detail": msg, "kind": "busy", "field": … }` (STYLE §5.5;
//! `detail` is FastAPI's, which the old system's clients read). Refused input has its own
//! closed table, [`Refusal`].

use std::time::Duration;

use app::types::ErrorBody;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

/// Everything a handler can answer with instead of success.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Too much work queued; retry after the given time.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The model is not loaded (yet, or at all).
    #[error("{message}")]
    NotReady {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is running (e.g. a reload during a load).
    #[error("{0}")]
    Conflict(String),
    /// The old API's `400` for a video asked for before it exists (its clients read that
    /// status, not 409).
    #[error("{0}")]
    NotYet(String),
    #[error("{0}")]
    Internal(String),
    /// A bad upload or form field (the closed table of [`Refusal`]).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Why an upload or a parameter is refused: each kind has one status, one stable `kind` name
/// and the form field it concerns, so every entry (form, server function, REST, re-run) answers
/// a given mistake the same way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("expected a multipart form: {0}")]
    BadForm(String),
    #[error("unknown form field {name:?}; expected {expected}")]
    UnknownField { name: String, expected: String },
    #[error("the form has no {0}")]
    MissingField(&'static str),
    #[error("the upload is larger than the limit of {} MB", *limit as f64 / 1e6)]
    TooLarge {
        limit: u64,
        field: Option<&'static str>,
    },
    #[error("the form field {field} is longer than {limit} bytes")]
    FieldTooLong { field: &'static str, limit: usize },
    #[error("the request stopped arriving for {}s; send it again", .0.as_secs_f64())]
    ReadTimeout(Duration),
    #[error("{message}")]
    BadParameter {
        field: &'static str,
        message: String,
    },
    #[error(
        "the server's disk is nearly full ({:.1} GB free, {:.1} GB kept free); delete old jobs or free space",
        *free as f64 / 1e9,
        *keep as f64 / 1e9
    )]
    DiskFull { free: u64, keep: u64 },
    #[error("{0}")]
    UnsupportedImage(String),
    #[error("{0}")]
    NotAnImage(String),
    #[error("{0}")]
    ImageTooLarge(String),
    #[error("{0}")]
    InvalidImage(String),
    #[error("{0}")]
    NoFace(String),
    #[error("{0}")]
    FaceAnalysis(String),
    #[error("{0}")]
    UnsupportedAudio(String),
    #[error("{0}")]
    SilentAudio(String),
    #[error("{0}")]
    AudioTooLong(String),
    #[error("{0}")]
    AudioTooLarge(String),
    #[error("{0}")]
    EmptyAudio(String),
    #[error("{0}")]
    InvalidAudio(String),
}

impl Refusal {
    /// The refusal table: status, kind, field.
    pub fn table(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        use StatusCode as S;
        const IMAGE: Option<&str> = Some("image_file");
        const AUDIO: Option<&str> = Some("audio_file");
        match self {
            Self::BadForm(_) => (S::BAD_REQUEST, "bad_form", None),
            Self::UnknownField { .. } => (S::BAD_REQUEST, "unknown_field", None),
            // FastAPI's status for a missing form field.
            Self::MissingField(field) => (S::UNPROCESSABLE_ENTITY, "missing_field", Some(field)),
            Self::TooLarge { field, .. } => (S::PAYLOAD_TOO_LARGE, "too_large", *field),
            Self::FieldTooLong { field, .. } => (S::PAYLOAD_TOO_LARGE, "too_large", Some(field)),
            Self::ReadTimeout(_) => (S::REQUEST_TIMEOUT, "read_timeout", None),
            Self::BadParameter { field, .. } => {
                (S::UNPROCESSABLE_ENTITY, "bad_parameter", Some(field))
            }
            Self::DiskFull { .. } => (S::INSUFFICIENT_STORAGE, "disk_full", None),
            Self::UnsupportedImage(_) => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_image", IMAGE),
            Self::NotAnImage(_) => (S::UNSUPPORTED_MEDIA_TYPE, "not_an_image", IMAGE),
            Self::ImageTooLarge(_) => (S::UNPROCESSABLE_ENTITY, "image_too_large", IMAGE),
            Self::InvalidImage(_) => (S::UNPROCESSABLE_ENTITY, "invalid_image", IMAGE),
            Self::NoFace(_) => (S::UNPROCESSABLE_ENTITY, "no_face", IMAGE),
            Self::FaceAnalysis(_) => (S::UNPROCESSABLE_ENTITY, "face_analysis", IMAGE),
            Self::UnsupportedAudio(_) => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_audio", AUDIO),
            Self::SilentAudio(_) => (S::UNPROCESSABLE_ENTITY, "silent_audio", AUDIO),
            Self::AudioTooLong(_) => (S::UNPROCESSABLE_ENTITY, "audio_too_long", AUDIO),
            Self::AudioTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "too_large", AUDIO),
            Self::EmptyAudio(_) => (S::UNPROCESSABLE_ENTITY, "empty_audio", AUDIO),
            Self::InvalidAudio(_) => (S::UNPROCESSABLE_ENTITY, "invalid_audio", AUDIO),
        }
    }
}

impl From<app::jobs::ParamError> for Refusal {
    fn from(e: app::jobs::ParamError) -> Self {
        Self::BadParameter {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<model::image_io::ImageError> for Refusal {
    fn from(e: model::image_io::ImageError) -> Self {
        use model::image_io::ImageError as E;
        let text = e.to_string();
        match e {
            E::UnsupportedFormat { .. } => Self::UnsupportedImage(text),
            E::TooManyPixels { .. } => Self::ImageTooLarge(text),
            E::NotAnImage { .. } => Self::NotAnImage(text),
            _ => Self::InvalidImage(text),
        }
    }
}

impl From<model::face::FaceError> for Refusal {
    fn from(e: model::face::FaceError) -> Self {
        let text = e.to_string();
        match e {
            model::face::FaceError::NoFace => Self::NoFace(text),
            _ => Self::FaceAnalysis(text),
        }
    }
}

impl From<model::audio_io::AudioError> for Refusal {
    fn from(e: model::audio_io::AudioError) -> Self {
        use model::audio_io::AudioError as E;
        let text = e.to_string();
        match e {
            E::UnsupportedCodec { .. } | E::UnrecognisedFormat { .. } | E::NoAudioTrack { .. } => {
                Self::UnsupportedAudio(text)
            }
            E::Silent { .. } => Self::SilentAudio(text),
            E::TooLong { .. } => Self::AudioTooLong(text),
            E::TooLarge { .. } => Self::AudioTooLarge(text),
            E::Empty => Self::EmptyAudio(text),
            _ => Self::InvalidAudio(text),
        }
    }
}

impl ApiError {
    /// The status table: Busy→429, NotReady→503, NotFound→404, Conflict→409, NotYet→400,
    /// Internal→500, Refused→the refusal's.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotYet(_) => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Refused(r) => r.table().0,
        }
    }

    /// Machine-readable kind (the `kind` field).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Busy { .. } => "busy",
            Self::NotReady { .. } => "not_ready",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::NotYet(_) => "not_yet",
            Self::Internal(_) => "internal",
            Self::Refused(r) => r.table().1,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let message = self.to_string();
        ErrorBody {
            detail: message.clone(),
            error: message,
            kind: self.kind().to_string(),
            field: match self {
                Self::Refused(r) => r.table().2.map(str::to_string),
                _ => None,
            },
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy { retry_after, .. } | Self::NotReady { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_value(d: Duration) -> HeaderValue {
    HeaderValue::from(d.as_secs_f64().ceil().max(1.0) as u64)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_client_error() {
            crate::metrics::refused(self.kind());
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(d) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_value(d));
        }
        response
    }
}

impl From<ApiError> for Event {
    fn from(e: ApiError) -> Self {
        let data = serde_json::to_string(&e.body())
            .unwrap_or_else(|_| r#"{"error":"error","kind":"internal"}"#.into());
        Event::default().event("error").data(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_and_body_shape() {
        let cases = [
            (
                ApiError::Busy {
                    message: "queue full".into(),
                    retry_after: Some(Duration::from_millis(1500)),
                },
                429,
                "busy",
            ),
            (
                ApiError::Refused(Refusal::BadParameter {
                    field: "steps",
                    message: "bad".into(),
                }),
                422,
                "bad_parameter",
            ),
            (ApiError::NotYet("x".into()), 400, "not_yet"),
            (
                ApiError::NotReady {
                    message: "loading".into(),
                    retry_after: None,
                },
                503,
                "not_ready",
            ),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (ApiError::Internal("x".into()), 500, "internal"),
        ];
        for (e, status, kind) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.kind(), kind);
            let body = serde_json::to_value(e.body()).unwrap();
            assert_eq!(body["kind"], kind);
            assert!(body["error"].is_string());
            // FastAPI's error field, which the old clients read.
            assert_eq!(body["detail"], body["error"]);
        }
        let r = ApiError::Busy {
            message: "queue full".into(),
            retry_after: Some(Duration::from_millis(1500)),
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
