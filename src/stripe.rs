//! The Stripe API client: reads subscriptions (and events, for the
//! reconciler) from Stripe's REST API.
//!
//! It sends `Authorization: Bearer` and a pinned `Stripe-Version`, bounds
//! every request with a timeout, retries as Stripe's SDKs do (connection
//! errors, 409 and 5xx with jittered exponential backoff; 429 only when
//! `stripe-should-retry: true`; never when `stripe-should-retry: false`), and
//! never sends more than `max_rps` requests in any second.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The API version Tollgate asks for: the newest whose shapes it reads
/// (paused `status_details`, `customer_account`, `cancel_at`). Events
/// rendered at older versions (back to acacia) are parsed too.
pub const STRIPE_VERSION: &str = "2026-09-30.endive";

/// The one "no API key" error: every service that needs Stripe's API and
/// finds no client configured says exactly this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Stripe API not configured (set STRIPE_API_KEY)")]
pub struct NotConfigured;

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe has no such object")]
    NotFound,
    #[error("Stripe answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("Stripe unreachable: {0}")]
    Transport(String),
    #[error("Stripe answered with an unexpected body: {0}")]
    Decode(String),
    #[error("Tollgate does not read `{0}` objects")]
    Unsupported(String),
}

impl StripeError {
    /// Whether asking again later may succeed: unreachable, rate limited,
    /// or a server error. Not found, a refused request (bad key, bad
    /// parameters) and an object Tollgate can't read are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            StripeError::Transport(_) => true,
            StripeError::Status { status, .. } => {
                *status == 429 || *status == 409 || *status >= 500
            }
            StripeError::NotFound | StripeError::Decode(_) | StripeError::Unsupported(_) => false,
        }
    }
}

/// Spaces requests so that no more than `max_rps` start in any second.
struct RateLimiter {
    spacing: Duration,
    /// When the last request was let through. Held across the sleep so
    /// waiters queue in order.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl RateLimiter {
    fn new(max_rps: u32) -> Self {
        // A hair over 1/rps, so that timer jitter never squeezes one extra
        // request into a one-second window.
        let spacing = Duration::from_secs_f64(1.0 / f64::from(max_rps.max(1)) * 1.02);
        RateLimiter {
            spacing,
            last: tokio::sync::Mutex::new(None),
        }
    }

    async fn acquire(&self) {
        let mut last = self.last.lock().await;
        if let Some(prev) = *last {
            let next = prev + self.spacing;
            if next > Instant::now() {
                tokio::time::sleep_until(next.into()).await;
            }
        }
        *last = Some(Instant::now());
    }
}

pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: String,
    limiter: RateLimiter,
    max_retries: u32,
}

/// Settings for [`StripeClient::new`].
#[derive(Debug, Clone)]
pub struct StripeOptions {
    pub base_url: String,
    pub api_key: Option<String>,
    pub max_rps: u32,
    /// Per request attempt, connection included.
    pub request_timeout: Duration,
    pub max_retries: u32,
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    0.5 + f64::from(nanos % 1000) / 2000.0
}

/// Stripe SDK backoff: 0.5 s × 2^n, capped at 5 s, with jitter.
fn backoff(attempt: u32) -> Duration {
    let base = (0.5 * 2f64.powi(i32::try_from(attempt).unwrap_or(10))).min(5.0);
    Duration::from_secs_f64(base * jitter())
}

impl StripeClient {
    /// `None` when no API key is configured: refreshes then fail fast and
    /// HasAccess falls back to stale grace.
    pub fn new(options: &StripeOptions) -> Option<StripeClient> {
        let key = options
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())?;
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("BUG: reqwest client builds with static settings");
        Some(StripeClient {
            http,
            base: options.base_url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            limiter: RateLimiter::new(options.max_rps),
            max_retries: options.max_retries,
        })
    }

    /// GET `path` with `query`, retrying as the SDKs do.
    /// `endpoint` names the route for metrics, without ids.
    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, StripeError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            self.limiter.acquire().await;
            let sent = self
                .http
                .get(&url)
                .query(query)
                .bearer_auth(&self.key)
                .header("Stripe-Version", STRIPE_VERSION)
                .send()
                .await;
            let status = sent
                .as_ref()
                .map_or_else(|_| "error".to_owned(), |r| r.status().as_u16().to_string());
            metrics::counter!(crate::metrics::STRIPE_REQUESTS, "endpoint" => endpoint, "status" => status).increment(1);
            let (retry, error) = match sent {
                Err(e) => (true, StripeError::Transport(e.without_url().to_string())),
                Ok(resp) => {
                    let status = resp.status();
                    let should_retry = resp
                        .headers()
                        .get("stripe-should-retry")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v == "true");
                    if status.is_success() {
                        return resp
                            .json::<T>()
                            .await
                            .map_err(|e| StripeError::Decode(e.without_url().to_string()));
                    }
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    let message = body["error"]["message"]
                        .as_str()
                        .unwrap_or("no message")
                        .to_owned();
                    if status == StatusCode::NOT_FOUND {
                        return Err(StripeError::NotFound);
                    }
                    let retry = match should_retry {
                        Some(explicit) => explicit,
                        None => status == StatusCode::CONFLICT || status.is_server_error(),
                    };
                    (
                        retry,
                        StripeError::Status {
                            status: status.as_u16(),
                            message,
                        },
                    )
                }
            };
            if !retry || attempt >= self.max_retries {
                return Err(error);
            }
            let delay = backoff(attempt);
            tracing::warn!(path, attempt, delay_ms = delay.as_millis() as u64, error = %error, "stripe request failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// `GET /v1/subscriptions/{id}`.
    pub async fn subscription(&self, id: &str) -> Result<Value, StripeError> {
        if id.is_empty() || id.contains('/') {
            return Err(StripeError::NotFound);
        }
        self.get(
            "/v1/subscriptions/{id}",
            &format!("/v1/subscriptions/{id}"),
            &[],
        )
        .await
    }

    /// `GET` of one v1 object a thin event's `related_object` names, by
    /// Stripe's object type. The path is built here from the type and id,
    /// never taken from the event's `url`.
    pub async fn object(&self, object_type: &str, id: &str) -> Result<Value, StripeError> {
        let (endpoint, prefix) = match object_type {
            "subscription" => ("/v1/subscriptions/{id}", "/v1/subscriptions/"),
            "invoice" => ("/v1/invoices/{id}", "/v1/invoices/"),
            "checkout.session" => ("/v1/checkout/sessions/{id}", "/v1/checkout/sessions/"),
            "customer" => ("/v1/customers/{id}", "/v1/customers/"),
            "product" => ("/v1/products/{id}", "/v1/products/"),
            other => return Err(StripeError::Unsupported(other.to_owned())),
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StripeError::NotFound);
        }
        self.get(endpoint, &format!("{prefix}{id}"), &[]).await
    }

    /// Every subscription of a customer, canceled ones included. An
    /// `acct_…` id is an Accounts v2 customer account, listed with
    /// `customer_account=`.
    pub async fn customer_subscriptions(&self, customer: &str) -> Result<Vec<Value>, StripeError> {
        let by = if customer.starts_with("acct_") {
            "customer_account"
        } else {
            "customer"
        };
        let query = [(by, customer.to_owned()), ("status", "all".to_owned())];
        self.list_all("/v1/subscriptions", "/v1/subscriptions", &query)
            .await
    }

    /// Every object a list endpoint returns, page by page (100 a page,
    /// `starting_after` the last id while `has_more`).
    async fn list_all(
        &self,
        endpoint: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, StripeError> {
        let mut out = Vec::new();
        let mut starting_after: Option<String> = None;
        loop {
            let mut page_query = query.to_vec();
            page_query.push(("limit", "100".to_owned()));
            if let Some(after) = &starting_after {
                page_query.push(("starting_after", after.clone()));
            }
            let page = self.get(endpoint, path, &page_query).await?;
            let (data, has_more) = list_page(page)?;
            starting_after = data
                .last()
                .and_then(|o| o["id"].as_str())
                .map(str::to_owned);
            out.extend(data);
            if !has_more || starting_after.is_none() {
                return Ok(out);
            }
        }
    }

    /// The lookup keys of the active Entitlements features attached to
    /// `product` (`GET /v1/products/{id}/features`, every page).
    pub async fn product_features(&self, product: &str) -> Result<Vec<String>, StripeError> {
        if product.is_empty()
            || !product
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StripeError::NotFound);
        }
        let path = format!("/v1/products/{product}/features");
        let attached = self
            .list_all("/v1/products/{id}/features", &path, &[])
            .await?;
        let mut keys: Vec<String> = attached
            .iter()
            .map(|a| &a["entitlement_feature"])
            // An archived feature grants nothing.
            .filter(|feature| feature["active"].as_bool() != Some(false))
            .filter_map(|feature| feature["lookup_key"].as_str())
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The lookup keys of `customer`'s active entitlements (`GET
    /// /v1/entitlements/active_entitlements?customer=`, every page).
    pub async fn active_entitlements(&self, customer: &str) -> Result<Vec<String>, StripeError> {
        let path = "/v1/entitlements/active_entitlements";
        let query = [("customer", customer.to_owned())];
        let listed = self.list_all(path, path, &query).await?;
        let mut keys = listed
            .iter()
            .map(|e| crate::event::active_entitlement_key(e).map_err(|e| StripeError::Decode(e.0)))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// One page of `GET /v1/events`, newest first, each event as the text
    /// Stripe sent: the reconciler parses it once, as it does a webhook's
    /// body, rather than into a tree first.
    pub async fn events_page(
        &self,
        types: &[&str],
        created_gte: i64,
        starting_after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Box<RawValue>>, bool), StripeError> {
        let mut query = vec![
            ("limit", limit.clamp(1, 100).to_string()),
            ("created[gte]", created_gte.to_string()),
        ];
        for t in types {
            query.push(("types[]", (*t).to_owned()));
        }
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        let page: RawPage = self.get("/v1/events", "/v1/events", &query).await?;
        Ok((page.data, page.has_more))
    }
}

/// A page of a list with each object left unparsed.
#[derive(Deserialize)]
struct RawPage {
    data: Vec<Box<RawValue>>,
    #[serde(default)]
    has_more: bool,
}

fn list_page(mut page: Value) -> Result<(Vec<Value>, bool), StripeError> {
    let has_more = page["has_more"].as_bool().unwrap_or(false);
    match page["data"].take() {
        Value::Array(data) => Ok((data, has_more)),
        _ => Err(StripeError::Decode("list without data".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..10 {
            let d = backoff(attempt).as_secs_f64();
            let base = (0.5 * 2f64.powi(attempt as i32)).min(5.0);
            assert!(d >= base * 0.5 && d <= base, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn no_key_means_no_client() {
        let options = StripeOptions {
            base_url: "http://127.0.0.1:1".into(),
            api_key: Some("  ".into()),
            max_rps: 20,
            request_timeout: Duration::from_secs(1),
            max_retries: 2,
        };
        assert!(StripeClient::new(&options).is_none());
    }

    #[tokio::test]
    async fn the_rate_limiter_spaces_requests() {
        let limiter = RateLimiter::new(50);
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        // Five gaps of at least 20 ms.
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
