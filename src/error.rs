//! Where domain errors become HTTP statuses and gRPC codes: here, once.
//!
//! Internal causes are logged here; clients get a short, safe message and
//! never database error text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::access::AccessError;
use crate::event::EnvelopeError;
use crate::signature::SignatureError;
use crate::store::StoreError;

/// Why a webhook delivery was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("body larger than 1 MiB")]
    TooLarge,
    #[error("could not read the request body")]
    BodyRead,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::Signature(e) => {
                metrics::counter!(crate::metrics::SIGNATURE_FAILURES, "cause" => e.cause())
                    .increment(1);
                tracing::warn!(cause = e.cause(), "webhook signature refused");
                StatusCode::BAD_REQUEST
            }
            WebhookError::Envelope(e) => {
                tracing::warn!(error = %e, "webhook body refused");
                StatusCode::BAD_REQUEST
            }
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BodyRead => StatusCode::BAD_REQUEST,
            WebhookError::Store(e) => {
                tracing::error!(error = ?e, "event not stored; answering 503 so stripe retries");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let kind = match &self {
            WebhookError::Signature(_) => None,
            WebhookError::Envelope(_) => Some("not_an_event"),
            WebhookError::TooLarge => Some("too_large"),
            WebhookError::BodyRead => Some("body_read"),
            WebhookError::Store(_) => Some("store_unavailable"),
        };
        if let Some(kind) = kind {
            metrics::counter!(crate::metrics::WEBHOOK_ERRORS, "kind" => kind).increment(1);
        }
        let message = match &self {
            WebhookError::Store(_) => "event not stored; retry later".to_owned(),
            other => other.to_string(),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

impl From<AccessError> for tonic::Status {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::InvalidSubject => tonic::Status::invalid_argument(e.to_string()),
            AccessError::Store(inner) => {
                tracing::error!(error = ?inner, "has_access store read failed");
                tonic::Status::unavailable("store unavailable; retry")
            }
        }
    }
}

impl From<crate::admin::AdminError> for tonic::Status {
    fn from(e: crate::admin::AdminError) -> Self {
        use crate::admin::AdminError;
        match e {
            AdminError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            AdminError::NotFound(m) => tonic::Status::not_found(m),
            AdminError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            AdminError::Unavailable(m) => tonic::Status::unavailable(m),
            AdminError::Store(inner) => {
                tracing::error!(error = ?inner, "admin store call failed");
                tonic::Status::unavailable("store unavailable; retry")
            }
        }
    }
}
