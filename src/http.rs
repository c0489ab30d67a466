//! The HTTP edge: Stripe webhooks and health checks. Handlers only convert
//! between HTTP and the domain.

use std::sync::Arc;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::clock::Clock;
use crate::error::WebhookError;
use crate::event;
use crate::ledger::{Ingested, Ledger, Source};
use crate::refresh::Refresher;
use crate::signature::{self, Secrets};
use crate::store::Store;

/// Stripe's events are far smaller; anything bigger is not from Stripe.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Bodies being read at once may hold at most this much memory together:
/// the connection cap alone would allow `max_connections` × 1 MiB. A
/// delivery that finds the budget spent gets 503 and Stripe retries it.
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// After this long, a body must keep arriving at [`MIN_BODY_RATE`] or
/// faster; Stripe sends headers and body at once, so only a deliberately
/// slow client is ever cut.
const BODY_RATE_GRACE: Duration = Duration::from_secs(5);
/// Bytes per second a body must average once [`BODY_RATE_GRACE`] is over.
const MIN_BODY_RATE: u64 = 1024;

pub struct HttpState {
    pub ledger: Arc<Ledger>,
    pub clock: Arc<dyn Clock>,
    pub refresher: Arc<Refresher>,
    pub store: Arc<dyn Store>,
    pub secrets: Secrets,
    pub tolerance_secs: u64,
    /// Longest a webhook body may take to arrive.
    pub body_timeout: Duration,
    /// Bytes of bodies being read right now, at most
    /// [`BODY_BUDGET_BYTES`].
    pub body_budget: Arc<Semaphore>,
}

/// The HTTP port's routes; `api` adds the HTTP/JSON API when configured.
pub fn router(state: Arc<HttpState>, api: Option<Router>) -> Router {
    let routes = Router::new()
        .route("/webhooks/stripe", post(receive_webhook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let routes = match api {
        Some(api) => routes.merge(api),
        None => routes,
    };
    routes.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        crate::error::http_panic,
    ))
}

fn refused(kind: &'static str) {
    metrics::counter!(crate::metrics::INPUTS_REFUSED, "kind" => kind).increment(1);
}

/// Reads a webhook body while holding it to [`MAX_BODY_BYTES`] (checked
/// against Content-Length first, then as it streams), the shared
/// [`BODY_BUDGET_BYTES`], the body timeout and the minimum rate.
async fn read_body(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, WebhookError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        refused("body_too_large");
        return Err(WebhookError::TooLarge);
    }
    let reserve = declared.map_or(MAX_BODY_BYTES, |n| n as usize).max(1);
    let _reserved = state
        .body_budget
        .clone()
        .try_acquire_many_owned(reserve as u32)
        .map_err(|_| {
            refused("body_budget");
            WebhookError::Busy
        })?;
    let started = tokio::time::Instant::now();
    let deadline = started + state.body_timeout;
    let mut body = body.into_data_stream();
    let mut buf = Vec::with_capacity(reserve.min(MAX_BODY_BYTES));
    loop {
        let tick = tokio::time::Instant::now() + Duration::from_secs(1);
        let next =
            tokio::time::timeout_at(tick.min(deadline), futures::StreamExt::next(&mut body)).await;
        match next {
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > reserve {
                    refused("body_too_large");
                    return Err(WebhookError::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Some(Err(_))) => return Err(WebhookError::BodyRead),
            Ok(None) => return Ok(Bytes::from(buf)),
            Err(_) => {}
        }
        let now = tokio::time::Instant::now();
        let elapsed = now - started;
        let owed = elapsed.saturating_sub(BODY_RATE_GRACE).as_secs() * MIN_BODY_RATE;
        if now >= deadline || (buf.len() as u64) < owed {
            metrics::counter!(crate::metrics::CONNECTIONS_DROPPED, "port" => "http", "cause" => "slow_body")
                .increment(1);
            return Err(WebhookError::SlowBody);
        }
    }
}

async fn receive_webhook(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, WebhookError> {
    let body = read_body(&state, &headers, body).await?;
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
        state.clock.now_secs(),
        state.tolerance_secs,
    )?;
    let envelope = event::parse_envelope(&body)?;
    // Instrumented, not entered: a guard held across `.await` would leak
    // this span into whatever else runs on the thread.
    let span =
        tracing::info_span!("webhook", event_id = %envelope.id, event_type = %envelope.event_type);
    // The label comes from a signed body, but its values must stay few:
    // types Tollgate acts on by name (thin ones with their `v1.` prefix),
    // everything else as "other".
    let event_type = if envelope.is_handled() {
        envelope.event_type.clone()
    } else {
        "other".to_owned()
    };
    let ingested = state
        .ledger
        .ingest(envelope, &body, Source::Webhook)
        .instrument(span.clone())
        .await?;
    let _enter = span.enter();
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
        Ok(()) => state.store.probe_write(state.clock.now_ms()).await,
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
