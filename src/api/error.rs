//! [`ApiError`]: every failure of the API as JSON,
//! `{"error": {"code": "...", "message": "...", "fields": [...]}}`, with
//! the HTTP status of its code; and how the node's own errors map to it.

use axum::{
    Json,
    extract::OriginalUri,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::{
    actors::{executor_actor::ExecutorError, supervisor_actor::SupervisorError},
    error::Error,
    spec::SpecErrors,
};

/// What kind of failure, as the `code` of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed or names an invalid value.
    BadRequest,
    /// 401: a mutating request without the right bearer token.
    Unauthorized,
    /// 403: a mutating request from another origin (a web page).
    Forbidden,
    /// 404: no such route, service, job or execution.
    NotFound,
    /// 405: the route exists with other methods.
    MethodNotAllowed,
    /// 409: the request conflicts with the current state (the execution
    /// already ended, the job's concurrency forbids another run).
    Conflict,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 414: the request line is longer than the server reads (64 KiB).
    UriTooLong,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 431: the request's head is larger than the server reads (400 KiB;
    /// hyper checks between reads, so a head up to 800 KiB may pass).
    HeadersTooLarge,
    /// 503: the node is shutting down, or a part of it does not answer.
    Unavailable,
    /// 503: a part of the node the request needs is being restarted; try
    /// again shortly.
    Restarting,
    /// 500: anything else.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unavailable | Self::Restarting => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code of an HTTP status (`internal` for one the API never uses).
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            414 => Self::UriTooLong,
            415 => Self::UnsupportedMediaType,
            431 => Self::HeadersTooLarge,
            503 => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

/// One invalid field of a spec built from a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Its path (`command[1]`, `notify.command`).
    pub field: String,
    /// The value it held.
    pub value: String,
    /// What is wrong.
    pub message: String,
}

/// The `error` object of an error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What is wrong, naming the field or value.
    pub message: String,
    /// Every invalid field, when the request built an invalid spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A failed request: turned into its status and an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The body's `error`.
    pub detail: ErrorDetail,
}

impl ApiError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            detail: ErrorDetail {
                code,
                message: message.into(),
                fields: Vec::new(),
            },
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// 400 for an invalid spec, with every field.
    pub fn invalid_spec(errors: &SpecErrors) -> Self {
        let mut e = Self::bad_request(one_line(errors));
        e.detail.fields = fields(errors);
        e
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.detail.code.status()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.detail.message, self.detail.code)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(ErrorBody { error: self.detail })).into_response()
    }
}

/// `invalid spec: command: must not be empty (got []); ...` on one line.
fn one_line(errors: &SpecErrors) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("invalid spec: {}", parts.join("; "))
}

fn fields(errors: &SpecErrors) -> Vec<FieldError> {
    errors
        .iter()
        .map(|e| FieldError {
            field: e.field.clone(),
            value: e.value.clone(),
            message: e.message.clone(),
        })
        .collect()
}

impl From<ExecutorError> for ApiError {
    fn from(e: ExecutorError) -> Self {
        match &e {
            ExecutorError::Invalid(errors) => Self::invalid_spec(errors),
            ExecutorError::Restarting(_) => Self::new(ErrorCode::Restarting, e.to_string()),
            _ => Self::new(ErrorCode::from_status(e.status()), e.to_string()),
        }
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let code = match &e {
            SupervisorError::NotFound(_) => ErrorCode::NotFound,
            SupervisorError::InvalidSpec { errors, .. } => {
                let mut err = Self::bad_request(e.to_string().replace('\n', " "));
                err.detail.fields = fields(errors);
                return err;
            }
            SupervisorError::AlreadyPresent(_)
            | SupervisorError::Running(_)
            | SupervisorError::Restarting(_)
            | SupervisorError::MaxChildren(_) => ErrorCode::Conflict,
            SupervisorError::Unavailable(_) | SupervisorError::ShuttingDown(_) => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Executor(e) => e.into(),
            Error::Supervisor(e) => e.into(),
            Error::Spec(errors) => Self::invalid_spec(&errors),
            Error::ShuttingDown => Self::new(ErrorCode::Unavailable, e.to_string()),
            Error::Restarting(_) => Self::new(ErrorCode::Restarting, e.to_string()),
            Error::Conflict(_) => Self::new(ErrorCode::Conflict, e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }
}

/// The answer to a route that does not exist.
pub(crate) async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

/// The answer to a route that exists with other methods.
pub(crate) async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
