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
use crate::subject::SubjectError;

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
    /// The body did not arrive within the body timeout or at the minimum
    /// rate; the connection is closed.
    #[error("request body too slow")]
    SlowBody,
    /// The memory set aside for bodies being read is in use; retry.
    #[error("too many deliveries in progress; retry later")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A thin event's object could not be read from Stripe now; nothing
    /// was stored.
    #[error("stripe unavailable: {0}")]
    Related(String),
}

impl From<crate::ledger::IngestError> for WebhookError {
    fn from(e: crate::ledger::IngestError) -> Self {
        match e {
            crate::ledger::IngestError::Store(e) => WebhookError::Store(e),
            crate::ledger::IngestError::StripeUnavailable(why) => WebhookError::Related(why),
        }
    }
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
            WebhookError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            WebhookError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Related(why) => {
                tracing::warn!(error = %why, "thin event's object unreadable for now; answering 503 so stripe retries");
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebhookError::Store(e) if e.is_transient() => {
                tracing::error!(error = ?e, "event not stored; answering 503 so stripe retries");
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebhookError::Store(StoreError::Rejected(e)) => {
                tracing::error!(error = ?e, "event can never be stored; answering 400");
                StatusCode::BAD_REQUEST
            }
            WebhookError::Store(e) => {
                tracing::error!(error = ?e, "event not stored: a bug; answering 500");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let kind = match &self {
            WebhookError::Signature(_) => None,
            WebhookError::Envelope(_) => Some("not_an_event"),
            WebhookError::TooLarge => Some("too_large"),
            WebhookError::BodyRead => Some("body_read"),
            WebhookError::SlowBody => Some("slow_body"),
            WebhookError::Busy => Some("busy"),
            WebhookError::Related(_) => Some("stripe_unavailable"),
            WebhookError::Store(e) if e.is_transient() => Some("store_unavailable"),
            WebhookError::Store(StoreError::Rejected(_)) => Some("store_refused"),
            WebhookError::Store(_) => Some("store_bug"),
        };
        if let Some(kind) = kind {
            metrics::counter!(crate::metrics::WEBHOOK_ERRORS, "kind" => kind).increment(1);
        }
        let message = match &self {
            WebhookError::Store(e) if e.is_transient() => {
                "event not stored; retry later".to_owned()
            }
            WebhookError::Store(StoreError::Rejected(_)) => {
                "event can never be stored: the database refuses one of its values".to_owned()
            }
            WebhookError::Store(_) => "internal error; event not stored".to_owned(),
            WebhookError::Related(_) => {
                "thin event's object could not be read from Stripe; event not stored, retry later"
                    .to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if matches!(self, WebhookError::SlowBody | WebhookError::TooLarge) {
            // The rest of the body is never read: the connection can't be
            // reused, and closing it frees its slot at once.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<AccessError> for tonic::Status {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Subject(e) => e.into(),
            AccessError::Store(inner) => store_status(&inner, "has_access store read failed"),
        }
    }
}

impl From<SubjectError> for tonic::Status {
    fn from(e: SubjectError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
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
            AdminError::Store(inner) => store_status(&inner, "admin store call failed"),
        }
    }
}

/// An admin error on the console's port (HTML, for a person): the status
/// and a message safe to show; a store failure's cause is logged, never
/// shown.
pub fn admin_http(e: &crate::admin::AdminError) -> (StatusCode, String) {
    use crate::admin::AdminError;
    match e {
        AdminError::InvalidArgument(m) => (StatusCode::BAD_REQUEST, m.clone()),
        AdminError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
        AdminError::FailedPrecondition(m) => (StatusCode::CONFLICT, m.clone()),
        AdminError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
        AdminError::Store(inner) => {
            tracing::error!(error = ?inner, "console store call failed");
            if inner.is_transient() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; try again".to_owned(),
                )
            } else {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        }
    }
}

/// A store error on a gRPC call: UNAVAILABLE when a retry can work,
/// INTERNAL otherwise; the cause is logged, never sent.
fn store_status(e: &StoreError, what: &'static str) -> tonic::Status {
    tracing::error!(error = ?e, "{what}");
    if e.is_transient() {
        tonic::Status::unavailable("store unavailable; retry")
    } else {
        tonic::Status::internal("internal error")
    }
}

/// A handler on the HTTP port panicked: 500 (Stripe retries a webhook), the
/// cause logged, the connection and the process unharmed.
pub fn http_panic(payload: Box<dyn std::any::Any + Send>) -> axum::http::Response<String> {
    let cause = crate::tasks::panic_message(payload.as_ref());
    tracing::error!(cause, "http handler panicked");
    metrics::counter!(crate::metrics::REQUEST_PANICS, "port" => "http").increment(1);
    let mut response = axum::http::Response::new(r#"{"error":"internal error"}"#.to_owned());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Runs a gRPC handler; if it panics, that call gets `INTERNAL` (the cause
/// logged and counted) instead of a reset stream, and every other call on
/// the connection goes on. Wrapping the handler future costs nothing on the
/// way through, unlike a tower layer, which would box every response body.
pub async fn guarded<T>(
    handler: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            let cause = crate::tasks::panic_message(payload.as_ref());
            tracing::error!(cause, "grpc handler panicked");
            metrics::counter!(crate::metrics::REQUEST_PANICS, "port" => "grpc").increment(1);
            Err(tonic::Status::internal("internal error"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_grpc_handler_answers_internal() {
        let answer: Result<(), tonic::Status> = guarded(async { panic!("bug") }).await;
        let status = answer.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Internal, "internal error")
        );
        let fine = guarded(async { Ok::<_, tonic::Status>(7) }).await;
        assert_eq!(fine.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_panicking_http_handler_answers_500_json_and_the_router_goes_on() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            panic!("bug")
        }
        let router = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(http_panic));
        let request = |path: &str| {
            axum::http::Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let response = router.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"error":"internal error"}"#);
        let response = router.oneshot(request("/ok")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
