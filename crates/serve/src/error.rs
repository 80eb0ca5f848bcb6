//! Typed errors of the service (start-up) and the JSON error answers of the API.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// What can stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid setting.
    #[error("{0}")]
    Config(String),
    /// A setting of [`crate::ServeConfig`] out of its range, named by its field (`max_batch`).
    /// A front end that names settings otherwise (a flag `--max-batch`) writes the message with
    /// [`Problem::describe`] and its own names.
    #[error("{field} {}", problem.describe(|f| f.to_string()))]
    Setting {
        /// The field.
        field: &'static str,
        /// What is wrong with its value.
        problem: Problem,
    },
    /// The token file cannot be used.
    #[error("token file {}: {detail}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A checkpoint cannot be served.
    #[error("checkpoint {}: {detail}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The listening address is not 127.0.0.1 or ::1 and nothing protects it.
    #[error(
        "refusing to listen on {0} without access tokens: only 127.0.0.1 and ::1 are private to this machine, so anyone who can \
         reach {0} could use the service; pass --token-file FILE (recommended) or --insecure-no-auth"
    )]
    Unprotected(SocketAddr),
    /// The socket cannot be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime or a thread pool cannot start.
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
}

/// An error answer: status, a stable machine-readable code and a message, as
/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `bad_image`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds to wait before retrying (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without Retry-After.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 400 for a request the service cannot use.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500 for a failure inside the service.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 with Retry-After: the service is saturated.
    pub fn overloaded(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
        }
        resp
    }
}

/// What is wrong with a setting's value (see [`Error::Setting`]); another setting it depends on
/// is named by its field, so that a front end can name it its own way.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Below its minimum.
    Below {
        /// The least value accepted.
        min: usize,
        /// The value given.
        value: usize,
    },
    /// Below another setting that it must hold at least (the queue must hold the images of one
    /// request, `max_images`).
    BelowSetting {
        /// The value given.
        value: usize,
        /// The other setting's field.
        other: &'static str,
        /// The other setting's value.
        other_value: usize,
    },
    /// Negative, infinite or not a number.
    NotFiniteOrNegative,
}

impl Problem {
    /// The problem in words, with other settings named by `name` (given a field, e.g. `max_images`).
    pub fn describe(&self, name: impl Fn(&str) -> String) -> String {
        match self {
            Problem::Below { min, value } => format!("must be at least {min}, not {value}"),
            Problem::BelowSetting { value, other, other_value } => {
                format!("({value}) must be at least {} ({other_value})", name(other))
            }
            Problem::NotFiniteOrNegative => "must be finite and not negative".to_string(),
        }
    }
}
