//! The admin console: server-rendered pages for people who review records,
//! on its own port (`TOLLGATE_ADMIN_HTTP_ADDR`), served only when
//! `TOLLGATE_ADMIN_TOKEN` is set. The webhook port never serves it.
//!
//! An edge: it checks the session, converts forms and queries, calls
//! [`Oversight`] and renders [`pages`]. What it guarantees:
//! - **Login** compares the token in constant time; a client address gets
//!   [`session::MAX_FAILURES`] wrong tokens a minute, then 429.
//! - **Sessions** are in memory ([`session`]): a cookie that is
//!   `HttpOnly`, `SameSite=Strict`, and `Secure` when configured or when the
//!   request came through a TLS proxy (`X-Forwarded-Proto: https`); they end
//!   after the idle time, on logout, or when the process restarts.
//! - **Every POST** but the login carries the session's CSRF token, checked
//!   before anything else; a mismatch is 403 and changes nothing.
//! - **Bounded input**: bodies over 64 KiB are refused (413), notes over
//!   2000 characters too (400); errors show a short message, never a
//!   framework's or the database's text.

mod pages;
pub mod session;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::Markup;
use serde::Deserialize;

use crate::admin::AdminError;
use crate::oversight::{Oversight, PAGE_SIZE};
use session::{same_secret, Session, Sessions};

/// The session cookie's name.
pub const COOKIE: &str = "tollgate_admin";

/// Largest request body accepted: the console's forms are a few fields.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest note kept with a resolution.
const MAX_NOTE_CHARS: usize = 2000;

pub struct ConsoleState {
    pub oversight: Arc<Oversight>,
    pub sessions: Sessions,
    /// The admin token a login must present.
    pub token: Arc<str>,
    /// Mark the cookie Secure even without `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
}

type Shared = State<Arc<ConsoleState>>;

pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/", get(overview))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/reviews", get(reviews))
        .route("/admin/reviews/{id}", get(review))
        .route("/admin/reviews/{id}/resolve", post(resolve))
        .route("/admin/reviews/{id}/release", post(release))
        .route("/admin/reviews/{id}/refresh", post(refresh))
        .route("/admin/reviews/{id}/replay", post(replay_for_review))
        .route("/admin/events", get(event_lookup))
        .route("/admin/events/{id}", get(event))
        .route("/admin/events/{id}/replay", post(replay_event))
        .route("/admin/subjects", get(subjects))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(protective_headers))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::error::http_panic,
        ))
}

/// Pages are private and must not be framed, cached or leak their URLs.
async fn protective_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Why a request got no page.
enum Refusal {
    /// No session, or an expired one: log in.
    LogIn,
    Status(Option<Session>, StatusCode, String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::LogIn => Redirect::to("/admin/login").into_response(),
            Refusal::Status(session, status, message) => (
                status,
                Html(pages::error(session.as_ref(), status.as_u16(), &message).into_string()),
            )
                .into_response(),
        }
    }
}

type Answer = Result<Response, Refusal>;

/// A 303 to a console path, its characters outside `[A-Za-z0-9_./-]`
/// percent-encoded (an id read from a URL may hold anything).
fn see_other(path: &str) -> Response {
    let mut encoded = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Redirect::to(&encoded).into_response()
}

fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

fn admin_error(session: &Session) -> impl FnOnce(AdminError) -> Refusal + '_ {
    move |e| {
        let (status, message) = crate::error::admin_http(&e);
        Refusal::Status(Some(session.clone()), status, message)
    }
}

fn bad_request(session: &Session, message: &str) -> Refusal {
    Refusal::Status(
        Some(session.clone()),
        StatusCode::BAD_REQUEST,
        message.to_owned(),
    )
}

/// The session cookie's value, if the request carries one.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

impl ConsoleState {
    /// The request's live session, or a redirect to the login page.
    fn session(&self, headers: &HeaderMap) -> Result<Session, Refusal> {
        session_id(headers)
            .and_then(|id| self.sessions.touch(id))
            .ok_or(Refusal::LogIn)
    }

    /// The session, with the form's CSRF token checked against it.
    fn session_for_post(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, Refusal> {
        let session = self.session(headers)?;
        if !same_secret(csrf, &session.csrf) {
            tracing::warn!(actor = %session.label, "console form refused: csrf token mismatch");
            return Err(Refusal::Status(
                Some(session),
                StatusCode::FORBIDDEN,
                "this form has expired or did not come from this console; reload the page and try again".to_owned(),
            ));
        }
        Ok(session)
    }

    fn cookie(&self, headers: &HeaderMap, value: &str, max_age: Option<u32>) -> HeaderValue {
        let behind_tls = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let mut cookie = format!("{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict");
        if let Some(age) = max_age {
            cookie.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure_cookie || behind_tls {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie)
            .expect("BUG: a cookie made of hex and ASCII is a valid header")
    }
}

/// A form whose fields could not be read: 400 with a short message.
fn form<T>(session: Option<&Session>, form: Result<Form<T>, FormRejection>) -> Result<T, Refusal> {
    form.map(|Form(f)| f).map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the form is too large"
        } else {
            "the form could not be read"
        };
        Refusal::Status(session.cloned(), status, message.to_owned())
    })
}

fn query<T>(session: &Session, query: Result<Query<T>, QueryRejection>) -> Result<T, Refusal> {
    query
        .map(|Query(q)| q)
        .map_err(|_| bad_request(session, "the query string could not be read"))
}

fn review_id(session: &Session, id: &str) -> Result<i64, Refusal> {
    id.parse()
        .map_err(|_| bad_request(session, "a review id is a number"))
}

fn note(session: &Session, note: &str) -> Result<String, Refusal> {
    let note = note.trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(bad_request(
            session,
            "the note is longer than 2000 characters",
        ));
    }
    Ok(note.to_owned())
}

// Login and logout.

async fn login_form(State(state): Shared, headers: HeaderMap) -> Response {
    if state.session(&headers).is_ok() {
        return Redirect::to("/admin").into_response();
    }
    html(pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(state): Shared,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    submitted: Result<Form<LoginForm>, FormRejection>,
) -> Answer {
    let client: IpAddr = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0 .0.ip());
    if state.sessions.locked_out(client) {
        tracing::warn!(%client, "console login refused: too many wrong tokens");
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            Html(pages::login(Some("Too many wrong tokens; wait a minute.")).into_string()),
        )
            .into_response());
    }
    let submitted = form(None, submitted)?;
    if !same_secret(submitted.token.trim(), &state.token) {
        state.sessions.failed(client);
        tracing::warn!(%client, "console login refused: wrong token");
        return Ok((
            StatusCode::UNAUTHORIZED,
            Html(pages::login(Some("Wrong token.")).into_string()),
        )
            .into_response());
    }
    let (id, session) = state.sessions.create();
    tracing::info!(%client, actor = %session.label, "console login");
    let cookie = state.cookie(&headers, &id, None);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): Shared,
    headers: HeaderMap,
    submitted: Result<Form<CsrfForm>, FormRejection>,
) -> Answer {
    let submitted = form(None, submitted)?;
    let session = state.session_for_post(&headers, &submitted.csrf)?;
    if let Some(id) = session_id(&headers) {
        state.sessions.end(id);
    }
    tracing::info!(actor = %session.label, "console logout");
    let cookie = state.cookie(&headers, "", Some(0));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/admin/login")).into_response())
}

// Pages.

async fn overview(State(state): Shared, headers: HeaderMap) -> Answer {
    let session = state.session(&headers)?;
    let o = state
        .oversight
        .overview()
        .await
        .map_err(admin_error(&session))?;
    Ok(html(pages::overview(&session, &o)))
}

#[derive(Deserialize)]
struct ReviewsQuery {
    state: Option<String>,
    reason: Option<String>,
    before: Option<i64>,
}

async fn reviews(
    State(state): Shared,
    headers: HeaderMap,
    q: Result<Query<ReviewsQuery>, QueryRejection>,
) -> Answer {
    let session = state.session(&headers)?;
    let q = query(&session, q)?;
    let (open, shown) = match q.state.as_deref().unwrap_or("open") {
        "open" | "" => (Some(true), "open"),
        "resolved" => (Some(false), "resolved"),
        "all" => (None, "all"),
        _ => return Err(bad_request(&session, "state is open, resolved or all")),
    };
    let reason = q.reason.as_deref().map(str::trim).unwrap_or("");
    let rows = state
        .oversight
        .reviews(open, Some(reason).filter(|r| !r.is_empty()), q.before)
        .await
        .map_err(admin_error(&session))?;
    let next = (rows.len() as i64 == PAGE_SIZE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let filter = pages::ReviewQuery {
        state: shown,
        reason,
    };
    Ok(html(pages::reviews(&session, &filter, &rows, next)))
}

async fn review(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let session = state.session(&headers)?;
    let id = review_id(&session, &id)?;
    let page = state
        .oversight
        .review_page(id)
        .await
        .map_err(admin_error(&session))?;
    Ok(html(pages::review(&session, &page)))
}

async fn event_lookup(
    State(state): Shared,
    headers: HeaderMap,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Answer {
    let session = state.session(&headers)?;
    let q = query(&session, q)?;
    match q.id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        // Ids are Stripe's (`evt_` and letters): safe in a path as they are.
        Some(id) if id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Ok(see_other(&format!("/admin/events/{id}")))
        }
        Some(_) => Err(Refusal::Status(
            Some(session),
            StatusCode::NOT_FOUND,
            "no such event: event ids are letters, digits and _".to_owned(),
        )),
        None => Ok(html(pages::event_lookup(&session))),
    }
}

#[derive(Deserialize)]
struct EventQuery {
    id: Option<String>,
}

async fn event(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let session = state.session(&headers)?;
    let page = state
        .oversight
        .event_page(&id)
        .await
        .map_err(admin_error(&session))?;
    Ok(html(pages::event(&session, &page)))
}

#[derive(Deserialize)]
struct SubjectQuery {
    user_id: Option<String>,
    customer_id: Option<String>,
}

async fn subjects(
    State(state): Shared,
    headers: HeaderMap,
    q: Result<Query<SubjectQuery>, QueryRejection>,
) -> Answer {
    let session = state.session(&headers)?;
    let q = query(&session, q)?;
    let user = q.user_id.as_deref().unwrap_or("").trim();
    let customer = q.customer_id.as_deref().unwrap_or("").trim();
    if user.is_empty() && customer.is_empty() {
        return Ok(html(pages::subject(&session, "", "", None)));
    }
    let page = state
        .oversight
        .subject_page(user, customer)
        .await
        .map_err(admin_error(&session))?;
    Ok(html(pages::subject(&session, user, customer, Some(&page))))
}

async fn not_found(State(state): Shared, headers: HeaderMap) -> Refusal {
    Refusal::Status(
        state.session(&headers).ok(),
        StatusCode::NOT_FOUND,
        "no such page".to_owned(),
    )
}

// Actions: each redirects to the page it was taken from.

#[derive(Deserialize)]
struct NoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
}

async fn resolve(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    submitted: Result<Form<NoteForm>, FormRejection>,
) -> Answer {
    let submitted = form(None, submitted)?;
    let session = state.session_for_post(&headers, &submitted.csrf)?;
    let id = review_id(&session, &id)?;
    let note = note(&session, &submitted.note)?;
    state
        .oversight
        .resolve(&session.label, id, &note)
        .await
        .map_err(admin_error(&session))?;
    tracing::info!(actor = %session.label, review_id = id, "review resolved in the console");
    Ok(see_other(&format!("/admin/reviews/{id}")))
}

async fn release(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    submitted: Result<Form<NoteForm>, FormRejection>,
) -> Answer {
    let submitted = form(None, submitted)?;
    let session = state.session_for_post(&headers, &submitted.csrf)?;
    let id = review_id(&session, &id)?;
    let note = note(&session, &submitted.note)?;
    state
        .oversight
        .release_hold(&session.label, id, &note)
        .await
        .map_err(admin_error(&session))?;
    tracing::info!(actor = %session.label, review_id = id, "held revocation released in the console");
    Ok(see_other(&format!("/admin/reviews/{id}")))
}

async fn refresh(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    submitted: Result<Form<CsrfForm>, FormRejection>,
) -> Answer {
    let submitted = form(None, submitted)?;
    let session = state.session_for_post(&headers, &submitted.csrf)?;
    let id = review_id(&session, &id)?;
    state
        .oversight
        .refresh(&session.label, id)
        .await
        .map_err(admin_error(&session))?;
    Ok(see_other(&format!("/admin/reviews/{id}")))
}

#[derive(Deserialize)]
struct ReplayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    event_id: String,
}

async fn replay_for_review(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    submitted: Result<Form<ReplayForm>, FormRejection>,
) -> Answer {
    let submitted = form(None, submitted)?;
    let session = state.session_for_post(&headers, &submitted.csrf)?;
    let id = review_id(&session, &id)?;
    state
        .oversight
        .replay(&session.label, &submitted.event_id, Some(id))
        .await
        .map_err(admin_error(&session))?;
    Ok(see_other(&format!("/admin/reviews/{id}")))
}

async fn replay_event(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    submitted: Result<Form<CsrfForm>, FormRejection>,
) -> Answer {
    let submitted = form(None, submitted)?;
    let session = state.session_for_post(&headers, &submitted.csrf)?;
    let event = state
        .oversight
        .replay(&session.label, &id, None)
        .await
        .map_err(admin_error(&session))?;
    Ok(see_other(&format!("/admin/events/{}", event.id)))
}
