//! `ApiError`: the one error type of the request path, with the one status table and the one
//! JSON shape `{ "error": msg, "kind": "busy" }` (STYLE §5.5).

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
    /// The request is malformed or out of limits.
    #[error("{0}")]
    Invalid(String),
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
    #[error("{0}")]
    Internal(String),
    /// A bad upload or form field: the status (400, 413, 415, 422), a stable kind
    /// (`too_large`, `no_face`, `silent_audio`, …) and the form field it concerns.
    #[error("{message}")]
    Input {
        status: StatusCode,
        kind: &'static str,
        field: Option<&'static str>,
        message: String,
    },
}

impl ApiError {
    /// The status table: Busy→429, Invalid→422, NotReady→503, NotFound→404, Conflict→409,
    /// Internal→500.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Input { status, .. } => *status,
        }
    }

    /// Machine-readable kind (the `kind` field).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Busy { .. } => "busy",
            Self::Invalid(_) => "invalid",
            Self::NotReady { .. } => "not_ready",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Internal(_) => "internal",
            Self::Input { kind, .. } => kind,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            kind: self.kind().to_string(),
            field: match self {
                Self::Input { field, .. } => field.map(str::to_string),
                _ => None,
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
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
            (ApiError::Invalid("bad".into()), 422, "invalid"),
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
        }
        let r = ApiError::Busy {
            message: "queue full".into(),
            retry_after: Some(Duration::from_millis(1500)),
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
