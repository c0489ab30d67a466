//! The HTTP edge: Stripe webhooks and health checks. Handlers only convert
//! between HTTP and the domain.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::error::WebhookError;
use crate::event;
use crate::ledger::{Ingested, Ledger, Source};
use crate::refresh::Refresher;
use crate::signature::{self, Secrets};
use crate::store::Store;

/// Stripe's events are far smaller; anything bigger is not from Stripe.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct HttpState {
    pub ledger: Arc<Ledger>,
    pub refresher: Arc<Refresher>,
    pub store: Arc<dyn Store>,
    pub secrets: Secrets,
    pub tolerance_secs: u64,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(receive_webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::error::http_panic,
        ))
}

async fn receive_webhook(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, WebhookError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebhookError::TooLarge
        } else {
            WebhookError::BodyRead
        }
    })?;
    let header = match headers.get("stripe-signature") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| signature::SignatureError::MalformedHeader)?,
        ),
    };
    signature::verify(
        &state.secrets,
        header,
        &body,
        crate::access::now_secs(),
        state.tolerance_secs,
    )?;
    let envelope = event::parse_envelope(&body)?;
    // Instrumented, not entered: a guard held across `.await` would leak
    // this span into whatever else runs on the thread.
    let span =
        tracing::info_span!("webhook", event_id = %envelope.id, event_type = %envelope.event_type);
    let ingested = state
        .ledger
        .ingest(&envelope, &body, Source::Webhook)
        .instrument(span.clone())
        .await?;
    let _enter = span.enter();
    let event_type = envelope.event_type.clone();
    match ingested {
        Ingested::Duplicate => {
            metrics::counter!(crate::metrics::WEBHOOKS, "type" => event_type, "outcome" => "duplicate").increment(1);
            tracing::info!("duplicate delivery acknowledged");
            Ok(Json(json!({ "received": true, "duplicate": true })))
        }
        Ingested::Recorded { outcome, follow_up } => {
            metrics::counter!(crate::metrics::WEBHOOKS, "type" => event_type, "outcome" => outcome.as_str()).increment(1);
            tracing::info!(outcome = outcome.as_str(), "event recorded");
            state.refresher.follow_up(follow_up);
            Ok(Json(json!({
                "received": true,
                "duplicate": false,
                "outcome": outcome.as_str(),
            })))
        }
    }
}

/// Prometheus text format; database-held sizes are read now.
async fn metrics(State(state): State<Arc<HttpState>>) -> (StatusCode, String) {
    use crate::metrics as m;
    match state.store.counts().await {
        Ok(c) => {
            metrics::gauge!(m::NOTIFICATIONS_QUEUED).set(c.queued_notifications as f64);
            metrics::gauge!(m::NOTIFICATIONS_DEAD).set(c.dead_notifications as f64);
            metrics::gauge!(m::REVIEWS_OPEN).set(c.open_reviews as f64);
        }
        Err(e) => tracing::warn!(error = %e, "metrics could not read queue sizes"),
    }
    (StatusCode::OK, m::handle().render())
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers a read and accepts a write: after a
/// failed commit (disk full, I/O error) this goes unready until writes work.
async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, Json<Value>) {
    let checked = match state.store.ping().await {
        Ok(()) => state.store.probe_write().await,
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => (StatusCode::OK, Json(json!({ "ready": true }))),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "ready": false, "error": "database unavailable" })),
            )
        }
    }
}
