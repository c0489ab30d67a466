//! A fake Stripe REST API: a real HTTP server on 127.0.0.1, port 0, that
//! serves subscriptions and events in Stripe's shapes (list objects, cursor
//! paging, error JSON), records every request it receives, and can be told
//! to misbehave (slow, 500s, 429s, a number of failures then recovery).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Default and largest page size of Stripe's list endpoints.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

/// How the fake answers from now on.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer as Stripe does.
    Normal,
    /// Sleep this long, then answer normally.
    Delay(Duration),
    /// Answer from the state at arrival, but only after this long: a read
    /// that is on its way while the object changes.
    SlowAnswer(Duration),
    /// 500 with an `api_error`.
    Fail500,
    /// 429 with a `rate_limit_error`; with `Some`, also the header
    /// `stripe-should-retry: true|false`.
    RateLimited { should_retry: Option<bool> },
    /// The first `n` requests (counted from `set_behavior`) answer `status`
    /// with Stripe error JSON; later ones answer normally.
    FailTimes { n: usize, status: u16 },
    /// The `nth` request (from 1, counted from `set_behavior`) whose path
    /// starts with `path` answers `status`; every other answers normally.
    FailNth {
        path: &'static str,
        nth: usize,
        status: u16,
    },
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The raw query string, as sent (possibly percent-encoded); empty if none.
    pub query: String,
    pub authorization: Option<String>,
    pub stripe_version: Option<String>,
    pub at: Instant,
}

struct Inner {
    /// Subscriptions in insertion order; a replacement keeps its position.
    subscriptions: Mutex<Vec<Value>>,
    /// Invoices, checkout sessions and customers, by (object type, id): what
    /// thin events point at.
    objects: Mutex<std::collections::HashMap<(String, String), Value>>,
    /// Entitlements features attached to each product, in order.
    product_features: Mutex<std::collections::HashMap<String, Vec<Value>>>,
    /// Each customer's active entitlements, in order.
    active_entitlements: Mutex<std::collections::HashMap<String, Vec<Value>>>,
    /// Events in insertion order.
    events: Mutex<Vec<Value>>,
    behavior: Mutex<BehaviorState>,
    requests: Mutex<Vec<Request>>,
}

struct BehaviorState {
    behavior: Behavior,
    /// Failures already served under `FailTimes`.
    failed: usize,
    /// Requests seen under `FailNth` whose path matched.
    matched: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("BUG: fake stripe lock poisoned")
}

/// Handle to a running fake; cheap to clone, all clones share state.
#[derive(Clone)]
pub struct FakeStripe {
    inner: Arc<Inner>,
    base_url: String,
}

impl FakeStripe {
    /// Binds 127.0.0.1:0 and serves until the test's runtime ends.
    pub async fn start() -> FakeStripe {
        let inner = Arc::new(Inner {
            subscriptions: Mutex::new(Vec::new()),
            objects: Mutex::new(std::collections::HashMap::new()),
            product_features: Mutex::new(std::collections::HashMap::new()),
            active_entitlements: Mutex::new(std::collections::HashMap::new()),
            events: Mutex::new(Vec::new()),
            behavior: Mutex::new(BehaviorState {
                behavior: Behavior::Normal,
                failed: 0,
                matched: 0,
            }),
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake stripe");
        let addr = listener.local_addr().expect("fake stripe local addr");
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake stripe server stopped: {e}");
            }
        });
        FakeStripe {
            inner,
            base_url: format!("http://{addr}"),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Stores a subscription under `sub["id"]`, replacing (in place) one with
    /// the same id.
    pub fn put_subscription(&self, sub: Value) {
        let id = sub["id"]
            .as_str()
            .expect("fake stripe: subscription needs a string \"id\"")
            .to_owned();
        assert!(
            sub["customer"].is_string() || sub["customer_account"].is_string(),
            "fake stripe: subscription {id} needs a string \"customer\" or \"customer_account\""
        );
        let mut subs = lock(&self.inner.subscriptions);
        match subs.iter_mut().find(|s| s["id"] == id.as_str()) {
            Some(existing) => *existing = sub,
            None => subs.push(sub),
        }
    }

    /// Stores an invoice, checkout session or customer under its `object`
    /// and `id`, served at `/v1/invoices/{id}`, `/v1/checkout/sessions/{id}`
    /// and `/v1/customers/{id}`.
    pub fn put_object(&self, object: Value) {
        let kind = object["object"]
            .as_str()
            .expect("fake stripe: object needs a string \"object\"")
            .to_owned();
        let id = object["id"]
            .as_str()
            .expect("fake stripe: object needs a string \"id\"")
            .to_owned();
        lock(&self.inner.objects).insert((kind, id), object);
    }

    /// Attaches exactly these features (lookup keys) to `product`, as
    /// `GET /v1/products/{id}/features` lists them; also serves the product.
    pub fn set_product_features(&self, product: &str, lookup_keys: &[&str]) {
        let attached = lookup_keys
            .iter()
            .map(|key| {
                json!({
                    "id": format!("prodft_{product}_{key}"),
                    "object": "product_feature",
                    "entitlement_feature": {
                        "id": format!("feat_{key}"),
                        "object": "entitlements.feature",
                        "active": true,
                        "livemode": false,
                        "lookup_key": key,
                        "metadata": {},
                        "name": key,
                    },
                    "livemode": false,
                })
            })
            .collect();
        lock(&self.inner.product_features).insert(product.to_owned(), attached);
        self.put_object(json!({ "id": product, "object": "product", "name": product }));
    }

    /// Makes exactly these features (lookup keys) `customer`'s active
    /// entitlements, as `GET /v1/entitlements/active_entitlements` lists
    /// them.
    pub fn set_active_entitlements(&self, customer: &str, lookup_keys: &[&str]) {
        let listed = lookup_keys
            .iter()
            .map(|key| active_entitlement(key))
            .collect();
        lock(&self.inner.active_entitlements).insert(customer.to_owned(), listed);
    }

    pub fn remove_subscription(&self, id: &str) {
        lock(&self.inner.subscriptions).retain(|s| s["id"] != id);
    }

    /// Stores a full Stripe event object (`id`, `type`, `created`, ...).
    pub fn push_event(&self, event: Value) {
        assert!(
            event["id"].is_string(),
            "fake stripe: event needs a string \"id\""
        );
        lock(&self.inner.events).push(event);
    }

    /// Applies to all subsequent requests; restarts the `FailTimes` count.
    pub fn set_behavior(&self, b: Behavior) {
        *lock(&self.inner.behavior) = BehaviorState {
            behavior: b,
            failed: 0,
            matched: 0,
        };
    }

    /// Every request received, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.inner.requests).clone()
    }

    /// How many requests had a path starting with `path_prefix`.
    pub fn request_count(&self, path_prefix: &str) -> usize {
        lock(&self.inner.requests)
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }

    pub fn reset_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// The most requests received within any 1-second sliding window.
    pub fn max_requests_in_any_second(&self) -> usize {
        let ats: Vec<Instant> = lock(&self.inner.requests).iter().map(|r| r.at).collect();
        max_in_window(ats, Duration::from_secs(1))
    }
}

/// The most instants in any half-open window `[t, t + window)`.
fn max_in_window(mut ats: Vec<Instant>, window: Duration) -> usize {
    ats.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..ats.len() {
        while ats[end].duration_since(ats[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request = Request {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        authorization: header("authorization"),
        stripe_version: header("stripe-version"),
        at: Instant::now(),
    };
    let request_number = {
        let mut requests = lock(&inner.requests);
        requests.push(request.clone());
        requests.len()
    };

    let mut response = match planned_failure(&inner, &request.path) {
        Planned::Fail(response) => response,
        Planned::Delay(d) => {
            tokio::time::sleep(d).await;
            route(&inner, &request)
        }
        Planned::Answer => route(&inner, &request),
        Planned::SlowAnswer(d) => {
            let response = route(&inner, &request);
            tokio::time::sleep(d).await;
            response
        }
    };
    if let Ok(v) = HeaderValue::from_str(&format!("req_fake_{request_number}")) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

enum Planned {
    Answer,
    Delay(Duration),
    SlowAnswer(Duration),
    Fail(Response),
}

fn planned_failure(inner: &Inner, path: &str) -> Planned {
    let mut state = lock(&inner.behavior);
    match state.behavior.clone() {
        Behavior::Normal => Planned::Answer,
        Behavior::Delay(d) => Planned::Delay(d),
        Behavior::SlowAnswer(d) => Planned::SlowAnswer(d),
        Behavior::Fail500 => Planned::Fail(error_for_status(500)),
        Behavior::RateLimited { should_retry } => {
            let mut response = error_for_status(429);
            if let Some(retry) = should_retry {
                response.headers_mut().insert(
                    "stripe-should-retry",
                    HeaderValue::from_static(if retry { "true" } else { "false" }),
                );
            }
            Planned::Fail(response)
        }
        Behavior::FailTimes { n, status } => {
            if state.failed < n {
                state.failed += 1;
                Planned::Fail(error_for_status(status))
            } else {
                Planned::Answer
            }
        }
        Behavior::FailNth {
            path: p,
            nth,
            status,
        } if path.starts_with(p) => {
            state.matched += 1;
            if state.matched == nth {
                Planned::Fail(error_for_status(status))
            } else {
                Planned::Answer
            }
        }
        Behavior::FailNth { .. } => Planned::Answer,
    }
}

/// A Stripe error response fitting the status.
fn error_for_status(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, message) = match status.as_u16() {
        400 | 404 => ("invalid_request_error", "Invalid request (fake stripe)."),
        401 => (
            "authentication_error",
            "Invalid API Key provided (fake stripe).",
        ),
        402 => ("card_error", "Your card was declined (fake stripe)."),
        403 => ("invalid_request_error", "Permission denied (fake stripe)."),
        429 => (
            "rate_limit_error",
            "Too many requests hit the API too quickly (fake stripe).",
        ),
        _ => (
            "api_error",
            "An unknown error occurred while processing your request (fake stripe).",
        ),
    };
    stripe_error(status, json!({ "type": kind, "message": message }))
}

fn stripe_error(status: StatusCode, error: Value) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

fn not_found(message: String, param: Option<&str>) -> Response {
    let mut error = json!({
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": message,
    });
    if let Some(p) = param {
        error["param"] = json!(p);
    }
    stripe_error(StatusCode::NOT_FOUND, error)
}

fn bad_param(param: &str, message: String) -> Response {
    stripe_error(
        StatusCode::BAD_REQUEST,
        json!({
            "type": "invalid_request_error",
            "code": "parameter_invalid_integer",
            "message": message,
            "param": param,
        }),
    )
}

fn unrecognized(request: &Request) -> Response {
    not_found(
        format!(
            "Unrecognized request URL ({}: {}).",
            request.method, request.path
        ),
        None,
    )
}

fn route(inner: &Inner, request: &Request) -> Response {
    if request.method != "GET" {
        return unrecognized(request);
    }
    let query = parse_query(&request.query);
    match request.path.trim_end_matches('/') {
        "/v1/subscriptions" => list_subscriptions(inner, &query),
        "/v1/events" => list_events(inner, &query),
        "/v1/entitlements/active_entitlements" => list_active_entitlements(inner, &query),
        path => match path.strip_prefix("/v1/subscriptions/") {
            None => get_object(inner, request, path),
            Some(id) if !id.is_empty() && !id.contains('/') => {
                let id = percent_decode(id);
                let found = lock(&inner.subscriptions)
                    .iter()
                    .find(|s| s["id"] == id.as_str())
                    .cloned();
                match found {
                    Some(sub) => Json(sub).into_response(),
                    None => not_found(format!("No such subscription: '{id}'"), Some("id")),
                }
            }
            _ => unrecognized(request),
        },
    }
}

/// `GET /v1/invoices/{id}`, `/v1/checkout/sessions/{id}`, `/v1/customers/{id}`,
/// `/v1/products/{id}` and `/v1/products/{id}/features`.
fn get_object(inner: &Inner, request: &Request, path: &str) -> Response {
    if let Some(product) = path
        .strip_prefix("/v1/products/")
        .and_then(|rest| rest.strip_suffix("/features"))
        .filter(|p| !p.contains('/'))
    {
        let product = percent_decode(product);
        let features = lock(&inner.product_features).get(&product).cloned();
        return match features {
            Some(list) => {
                let url = format!("/v1/products/{product}/features");
                page(
                    list,
                    &parse_query(&request.query),
                    &url,
                    "product_feature",
                    |_| true,
                )
            }
            None => not_found(format!("No such product: '{product}'"), Some("id")),
        };
    }
    let routes = [
        ("/v1/products/", "product"),
        ("/v1/invoices/", "invoice"),
        ("/v1/checkout/sessions/", "checkout.session"),
        ("/v1/customers/", "customer"),
    ];
    for (prefix, kind) in routes {
        if let Some(id) = path.strip_prefix(prefix).filter(|id| !id.contains('/')) {
            let id = percent_decode(id);
            let found = lock(&inner.objects)
                .get(&(kind.to_owned(), id.clone()))
                .cloned();
            return match found {
                Some(object) => Json(object).into_response(),
                None => not_found(format!("No such {kind}: '{id}'"), Some("id")),
            };
        }
    }
    unrecognized(request)
}

/// Query parameters in order, keys and values percent-decoded; repeated keys
/// (`types[]`) are kept.
type Query = Vec<(String, String)>;

fn parse_query(raw: &str) -> Query {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn first<'q>(query: &'q Query, key: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn all<'q>(query: &'q Query, key: &str) -> Vec<&'q str> {
    query
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Decodes `%XX` escapes and `+` (form encoding's space); malformed escapes
/// are kept as they are.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The page size, or the message of Stripe's 400 for a bad `limit`.
fn parse_limit(query: &Query) -> Result<usize, String> {
    let Some(raw) = first(query, "limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "Invalid limit: must be between 1 and {MAX_LIMIT}, got {raw}."
        )),
        Err(_) => Err(format!("Invalid integer: {raw}")),
    }
}

/// One page of `ordered` (already newest first): the items after the
/// `starting_after` cursor that pass `keep`, at most `limit` of them. The
/// cursor is looked up among all items, so it still works if the object it
/// names no longer matches the filter.
fn page(
    ordered: Vec<Value>,
    query: &Query,
    url: &str,
    what: &str,
    keep: impl Fn(&Value) -> bool,
) -> Response {
    let limit = match parse_limit(query) {
        Ok(l) => l,
        Err(message) => return bad_param("limit", message),
    };
    let skip = match first(query, "starting_after") {
        None | Some("") => 0,
        Some(cursor) => match ordered.iter().position(|v| v["id"] == cursor) {
            Some(i) => i + 1,
            None => {
                return not_found(
                    format!("No such {what}: '{cursor}'"),
                    Some("starting_after"),
                )
            }
        },
    };
    let mut matching = ordered.into_iter().skip(skip).filter(|v| keep(v));
    let data: Vec<Value> = matching.by_ref().take(limit).collect();
    let has_more = matching.next().is_some();
    Json(json!({
        "object": "list",
        "url": url,
        "has_more": has_more,
        "data": data,
    }))
    .into_response()
}

fn list_subscriptions(inner: &Inner, query: &Query) -> Response {
    let ordered: Vec<Value> = lock(&inner.subscriptions).iter().rev().cloned().collect();
    let customer = first(query, "customer").map(str::to_owned);
    let account = first(query, "customer_account").map(str::to_owned);
    let status = first(query, "status").map(str::to_owned);
    page(ordered, query, "/v1/subscriptions", "subscription", |s| {
        let customer_ok = customer.as_deref().is_none_or(|c| s["customer"] == c)
            && account
                .as_deref()
                .is_none_or(|a| s["customer_account"] == a);
        let status_ok = match status.as_deref() {
            None => s["status"] != "canceled",
            Some("all") => true,
            Some(wanted) => s["status"] == wanted,
        };
        customer_ok && status_ok
    })
}

/// One `entitlements.active_entitlement` for the feature `key`.
pub fn active_entitlement(key: &str) -> Value {
    json!({
        "id": format!("ent_{key}"),
        "object": "entitlements.active_entitlement",
        "feature": format!("feat_{key}"),
        "livemode": false,
        "lookup_key": key,
    })
}

/// `GET /v1/entitlements/active_entitlements?customer=`: Stripe requires
/// the customer; one without entitlements has an empty list.
fn list_active_entitlements(inner: &Inner, query: &Query) -> Response {
    let Some(customer) = first(query, "customer").filter(|c| !c.is_empty()) else {
        return bad_param("customer", "Missing required param: customer.".to_owned());
    };
    let listed = lock(&inner.active_entitlements)
        .get(customer)
        .cloned()
        .unwrap_or_default();
    let url = "/v1/entitlements/active_entitlements";
    page(listed, query, url, "active_entitlement", |_| true)
}

fn list_events(inner: &Inner, query: &Query) -> Response {
    // Reverse insertion order, then a stable sort by `created` descending:
    // newest first, later insertion first among equals.
    let mut ordered: Vec<Value> = lock(&inner.events).iter().rev().cloned().collect();
    ordered.sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64().unwrap_or(0)));

    let mut bounds: Vec<(&str, i64)> = Vec::new();
    for op in ["gte", "gt", "lte", "lt"] {
        let key = format!("created[{op}]");
        if let Some(raw) = first(query, &key) {
            match raw.parse::<i64>() {
                Ok(t) => bounds.push((op, t)),
                Err(_) => return bad_param(&key, format!("Invalid integer: {raw}")),
            }
        }
    }
    if let Some(raw) = first(query, "created") {
        match raw.parse::<i64>() {
            Ok(t) => bounds.push(("eq", t)),
            Err(_) => return bad_param("created", format!("Invalid integer: {raw}")),
        }
    }
    let types: Vec<String> = all(query, "types[]")
        .into_iter()
        .map(str::to_owned)
        .collect();
    let single_type = first(query, "type").map(str::to_owned);

    page(ordered, query, "/v1/events", "event", |e| {
        let created = e["created"].as_i64().unwrap_or(0);
        let created_ok = bounds.iter().all(|&(op, t)| match op {
            "gte" => created >= t,
            "gt" => created > t,
            "lte" => created <= t,
            "lt" => created < t,
            _ => created == t,
        });
        let kind = e["type"].as_str().unwrap_or_default();
        let types_ok = types.is_empty() || types.iter().any(|t| t == kind);
        // `type` accepts a trailing wildcard, e.g. `customer.subscription.*`.
        let single_ok = single_type
            .as_deref()
            .is_none_or(|t| match t.strip_suffix('*') {
                Some(prefix) => kind.starts_with(prefix),
                None => kind == t,
            });
        created_ok && types_ok && single_ok
    })
}

// ---------------------------------------------------------------------------
// Tests of the fake itself
// ---------------------------------------------------------------------------

async fn get(fake: &FakeStripe, path_and_query: &str) -> (u16, HeaderMap, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path_and_query}", fake.base_url()))
        .header("Authorization", "Bearer sk_test_fake")
        .header("Stripe-Version", "2025-03-31.basil")
        .send()
        .await
        .expect("request to fake stripe");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.expect("fake stripe answers JSON");
    (status, headers, body)
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("list has data")
        .iter()
        .map(|v| v["id"].as_str().expect("item has id").to_owned())
        .collect()
}

fn event(id: &str, kind: &str, created: i64) -> Value {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": created,
        "data": { "object": {} },
    })
}

#[tokio::test]
async fn fake_stripe_pages_events_newest_first_and_filters_them() {
    let fake = FakeStripe::start().await;
    for i in 0..25 {
        fake.push_event(event(
            &format!("evt_{i:02}"),
            "customer.subscription.updated",
            1_000 + i,
        ));
    }

    let mut seen = Vec::new();
    let mut has_more_per_page = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/events?limit=10".to_owned(),
            Some(c) => format!("/v1/events?limit=10&starting_after={c}"),
        };
        let (status, _, list) = get(&fake, &path).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["object"], "list");
        assert_eq!(list["url"], "/v1/events");
        let page = ids(&list);
        cursor = page.last().cloned();
        seen.extend(page);
        let has_more = list["has_more"].as_bool().expect("has_more");
        has_more_per_page.push(has_more);
        if !has_more {
            break;
        }
    }
    assert_eq!(has_more_per_page, [true, true, false]);
    let expected: Vec<String> = (0..25).rev().map(|i| format!("evt_{i:02}")).collect();
    assert_eq!(seen, expected);

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(fake.request_count("/v1/events"), 3);
    assert_eq!(fake.request_count("/v1/subscriptions"), 0);
    assert!(requests.iter().all(|r| r.method == "GET"
        && r.authorization.as_deref() == Some("Bearer sk_test_fake")
        && r.stripe_version.as_deref() == Some("2025-03-31.basil")));
    assert_eq!(requests[1].query, "limit=10&starting_after=evt_15");

    // Filters: percent-encoded brackets, repeated `types[]`, `created[gte]`,
    // and equal `created` broken by later insertion first.
    fake.push_event(event("evt_paid", "invoice.paid", 1_020));
    fake.push_event(event("evt_deleted", "customer.subscription.deleted", 1_020));
    let (_, _, list) = get(
        &fake,
        "/v1/events?types%5B%5D=invoice.paid&types%5B%5D=customer.subscription.deleted\
         &created%5Bgte%5D=1020",
    )
    .await;
    assert_eq!(ids(&list), ["evt_deleted", "evt_paid"]);
    let (_, _, list) = get(&fake, "/v1/events?types[]=invoice.paid&created[gt]=1020").await;
    assert_eq!(ids(&list), Vec::<String>::new());
    assert_eq!(list["has_more"], false);
    let (_, _, list) = get(&fake, "/v1/events?created[gte]=1023&limit=100").await;
    assert_eq!(ids(&list), ["evt_24", "evt_23"]);

    // Bad paging parameters answer as Stripe does.
    let (status, _, body) = get(&fake, "/v1/events?limit=101").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "limit");
    let (status, _, body) = get(&fake, "/v1/events?starting_after=evt_nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "resource_missing");
}

#[tokio::test]
async fn fake_stripe_serves_subscriptions_and_hides_canceled_unless_status_all() {
    let fake = FakeStripe::start().await;
    let sub = |id: &str, customer: &str, status: &str| json!({ "id": id, "object": "subscription", "customer": customer, "status": status });
    fake.put_subscription(sub("sub_1", "cus_a", "active"));
    fake.put_subscription(sub("sub_2", "cus_a", "canceled"));
    fake.put_subscription(sub("sub_3", "cus_b", "active"));
    fake.put_subscription(sub("sub_4", "cus_a", "past_due"));

    let (status, _, list) = get(&fake, "/v1/subscriptions?customer=cus_a").await;
    assert_eq!(status, 200);
    assert_eq!(list["url"], "/v1/subscriptions");
    assert_eq!(ids(&list), ["sub_4", "sub_1"]);
    let (_, _, list) = get(&fake, "/v1/subscriptions?customer=cus_a&status=all").await;
    assert_eq!(ids(&list), ["sub_4", "sub_2", "sub_1"]);
    let (_, _, list) = get(&fake, "/v1/subscriptions?status=all&limit=2").await;
    assert_eq!(ids(&list), ["sub_4", "sub_3"]);
    assert_eq!(list["has_more"], true);
    let (_, _, list) = get(
        &fake,
        "/v1/subscriptions?status=all&limit=2&starting_after=sub_3",
    )
    .await;
    assert_eq!(ids(&list), ["sub_2", "sub_1"]);
    assert_eq!(list["has_more"], false);

    // Replacing keeps the position; a retrieve returns the stored object.
    fake.put_subscription(sub("sub_2", "cus_a", "active"));
    let (_, _, list) = get(&fake, "/v1/subscriptions?customer=cus_a").await;
    assert_eq!(ids(&list), ["sub_4", "sub_2", "sub_1"]);
    let (status, _, one) = get(&fake, "/v1/subscriptions/sub_2").await;
    assert_eq!(status, 200);
    assert_eq!(one, sub("sub_2", "cus_a", "active"));

    fake.remove_subscription("sub_2");
    let (status, _, body) = get(&fake, "/v1/subscriptions/sub_2").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such subscription: 'sub_2'",
            "param": "id",
        }})
    );
    let (status, _, body) = get(&fake, "/v1/customers/cus_a").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(fake.request_count("/v1/subscriptions/"), 2);
    assert_eq!(fake.request_count("/v1/"), 8);
}

#[tokio::test]
async fn fake_stripe_misbehaves_on_request_and_measures_bursts() {
    let fake = FakeStripe::start().await;
    fake.push_event(event("evt_1", "invoice.paid", 1));

    fake.set_behavior(Behavior::FailTimes { n: 2, status: 503 });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&fake, "/v1/events").await.0);
    }
    assert_eq!(statuses, [503, 503, 200]);
    // Failing requests are recorded too.
    assert_eq!(fake.request_count("/v1/events"), 3);

    fake.set_behavior(Behavior::RateLimited {
        should_retry: Some(false),
    });
    let (status, headers, body) = get(&fake, "/v1/events").await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        headers.get("stripe-should-retry").map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );
    fake.set_behavior(Behavior::RateLimited { should_retry: None });
    let (status, headers, _) = get(&fake, "/v1/events").await;
    assert_eq!(status, 429);
    assert!(headers.get("stripe-should-retry").is_none());

    fake.set_behavior(Behavior::Fail500);
    let (status, _, body) = get(&fake, "/v1/subscriptions/sub_x").await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["type"], "api_error");

    fake.set_behavior(Behavior::Delay(Duration::from_millis(150)));
    let started = Instant::now();
    let (status, _, _) = get(&fake, "/v1/events").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    fake.set_behavior(Behavior::Normal);
    fake.reset_requests();
    assert!(fake.requests().is_empty());
    let burst = (0..5).map(|_| get(&fake, "/v1/events"));
    for (status, _, _) in futures::future::join_all(burst).await {
        assert_eq!(status, 200);
    }
    assert_eq!(fake.max_requests_in_any_second(), 5);

    // The window itself, on synthetic instants: [t, t + 1s) is half-open.
    let t = fake.requests()[0].at;
    let ms = |n: u64| t + Duration::from_millis(n);
    let window = Duration::from_secs(1);
    assert_eq!(max_in_window(vec![], window), 0);
    assert_eq!(
        max_in_window(vec![ms(0), ms(999), ms(1000), ms(1001)], window),
        3
    );
    assert_eq!(
        max_in_window(vec![ms(2500), ms(0), ms(1200), ms(2100), ms(1900)], window),
        3
    );
}
