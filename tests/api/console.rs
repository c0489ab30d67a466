//! The admin console over real HTTP: login, sessions, CSRF, each page, and
//! each action's effect on the store with its audit entry.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use tollgate::clock::ManualClock;
use tollgate::store::ReviewRow;

use crate::helpers::{
    now, spawn_app_clocked, spawn_app_on, spawn_app_with, Backend, TestApp, ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::stripe::{envelope, subscription_event, subscription_object, Shape, Sub};

on_both_backends!(
    resolving_a_review_resolves_it_with_the_note_and_audits_who_did_it,
    a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing,
    refreshing_a_review_notes_what_stripe_says_and_audits_it,
    replaying_a_failed_event_from_its_page_audits_it,
    replaying_a_failed_event_from_a_review_puts_the_entry_on_the_review,
    releasing_a_held_revocation_ends_access_and_audits_it,
    the_review_page_shows_has_access_the_record_and_the_event_timeline,
    the_subject_page_shows_has_access_subscriptions_and_queued_notifications,
    the_overview_counts_open_reviews_by_reason_and_failed_events,
);

/// A browser without JavaScript: keeps the session cookie, follows no
/// redirects (tests look at them).
pub struct Browser {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookie(&self) -> &str {
        self.headers
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        let addr = app.console_addr.expect("the console is served");
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{addr}"),
            cookie: None,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(c) => request.header("cookie", c),
            None => request,
        };
        let response = request.send().await.expect("console answers");
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.base)).form(form))
            .await
    }

    /// Logs in with `token`; keeps the cookie it gets.
    pub async fn log_in_with(&mut self, token: &str) -> Page {
        let page = self.post("/admin/login", &[("token", token)]).await;
        if let Some(cookie) = page.set_cookie().split(';').next() {
            if !cookie.is_empty() {
                self.cookie = Some(cookie.to_owned());
            }
        }
        page
    }

    pub async fn log_in(&mut self) {
        let page = self.log_in_with(ADMIN_TOKEN).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    }

    /// GETs a page that must answer 200.
    pub async fn open(&self, path: &str) -> Page {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "GET {path}: {}", page.body);
        page
    }

    /// Submits a form of the page at `from` (with its CSRF token) to
    /// `action`.
    pub async fn submit(&self, from: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.open(from).await.csrf();
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(action, &form).await
    }
}

/// Delivers a canceled and then an active snapshot of one subscription:
/// the second is an impossible transition, flagged for review.
pub async fn impossible_transition(app: &TestApp, sub: &str, customer: &str) -> ReviewRow {
    let t = now();
    let s = Sub::new(sub, customer, "canceled", t + 86400);
    app.deliver(&subscription_event(
        &format!("evt_{sub}_1"),
        "customer.subscription.deleted",
        t - 20,
        &s,
        Shape::Basil,
    ))
    .await;
    let revived = subscription_event(
        &format!("evt_{sub}_2"),
        "customer.subscription.updated",
        t - 10,
        &s.status("active"),
        Shape::Basil,
    );
    assert_eq!(app.deliver(&revived).await, "ignored");
    // The follow-up read of Stripe runs in the background: wait for it, so
    // it can't overwrite what a test's own refresh notes.
    app.review_note(&format!("evt_{sub}_2"), "impossible_transition")
        .await;
    let reviews = app.store.list_reviews(true).await.unwrap();
    reviews
        .into_iter()
        .find(|r| r.subscription_id.as_deref() == Some(sub))
        .expect("the transition is flagged")
}

// Login, sessions and what the ports serve.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_with_the_admin_token_opens_the_console_with_a_strict_http_only_cookie() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/admin").await;
    assert_eq!(
        (page.status, page.location()),
        (StatusCode::SEE_OTHER, "/admin/login")
    );
    let form = browser.open("/admin/login").await;
    assert!(form.body.contains(r#"name="token""#), "{}", form.body);

    let login = browser.log_in_with(ADMIN_TOKEN).await;
    assert_eq!(
        (login.status, login.location()),
        (StatusCode::SEE_OTHER, "/admin")
    );
    let cookie = login.set_cookie();
    assert!(cookie.starts_with("tollgate_admin="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP, no proxy: {cookie}");
    assert!(!cookie.contains(ADMIN_TOKEN));

    let overview = browser.open("/admin").await;
    assert!(
        overview.body.contains("<h1>Overview</h1>"),
        "{}",
        overview.body
    );
    assert_eq!(
        overview.headers["x-frame-options"], "DENY",
        "pages can't be framed"
    );
    assert_eq!(overview.headers["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_five_a_minute_lock_the_address_out() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let mut browser = Browser::new(&app);
    for _ in 0..5 {
        let page = browser.log_in_with("not-the-token").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Wrong token"), "{}", page.body);
        assert!(page.set_cookie().is_empty());
    }
    // Now even the right token waits.
    let page = browser.log_in_with(ADMIN_TOKEN).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(page.headers["retry-after"], "60");
    assert!(page.set_cookie().is_empty());
    assert_eq!(
        browser.get("/admin").await.status,
        StatusCode::SEE_OTHER,
        "no session was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_behind_a_tls_proxy_or_when_configured() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let browser = Browser::new(&app);
    let page = browser
        .send(
            browser
                .http
                .post(format!("{}/admin/login", browser.base))
                .header("x-forwarded-proto", "https")
                .form(&[("token", ADMIN_TOKEN)]),
        )
        .await;
    assert!(
        page.set_cookie().contains("; Secure"),
        "{}",
        page.set_cookie()
    );

    let app = spawn_app_with(Backend::Sqlite, |c| c.console.secure_cookie = true).await;
    let mut browser = Browser::new(&app);
    let page = browser.log_in_with(ADMIN_TOKEN).await;
    assert!(
        page.set_cookie().contains("; Secure"),
        "{}",
        page.set_cookie()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_after_the_idle_time_and_each_request_extends_it() {
    let clock = Arc::new(ManualClock::at_secs(now()));
    let app = spawn_app_clocked(Backend::Sqlite, clock.clone(), |c| {
        c.console.session_idle = Duration::from_secs(600);
    })
    .await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    clock.advance_secs(600);
    browser.open("/admin").await;
    clock.advance_secs(600);
    browser.open("/admin/reviews").await;
    clock.advance_secs(601);
    let page = browser.get("/admin").await;
    assert_eq!(
        (page.status, page.location()),
        (StatusCode::SEE_OTHER, "/admin/login")
    );
    // Gone for good, not only while the clock says so.
    clock.advance_secs(-601);
    assert_eq!(browser.get("/admin").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_the_session_and_needs_its_csrf_token() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let refused = browser.post("/admin/logout", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    browser.open("/admin").await;

    let out = browser.submit("/admin", "/admin/logout", &[]).await;
    assert_eq!(
        (out.status, out.location()),
        (StatusCode::SEE_OTHER, "/admin/login")
    );
    assert!(
        out.set_cookie().contains("Max-Age=0"),
        "{}",
        out.set_cookie()
    );
    assert_eq!(browser.get("/admin").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_port_answers_404_for_admin_paths() {
    let app = spawn_app_on(Backend::Sqlite).await;
    for path in [
        "/admin",
        "/admin/login",
        "/admin/reviews",
        "/admin/events/evt_1",
    ] {
        let r = app
            .http
            .get(format!("http://{}{path}", app.http_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    let r = app
        .http
        .post(format!("http://{}/admin/login", app.http_addr))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(
        matches!(
            r.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ),
        "{}",
        r.status()
    );
    assert!(r.headers().get(SET_COOKIE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_console_is_not_served() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.admin_token = None).await;
    assert_eq!(app.console_addr, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_forms_and_unknown_pages_get_short_errors() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let mut browser = Browser::new(&app);
    let big = "x".repeat(100 * 1024);
    let page = browser.log_in_with(&big).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(page.body.contains("too large"), "{}", page.body);
    browser.log_in().await;
    let missing = browser.get("/admin/nowhere").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let not_a_number = browser.get("/admin/reviews/abc").await;
    assert_eq!(not_a_number.status, StatusCode::BAD_REQUEST);
    let unknown = browser.get("/admin/reviews/999").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("no review 999"), "{}", unknown.body);
    let bad_query = browser.get("/admin/reviews?before=soon").await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    assert!(
        !bad_query.body.contains("deserialize"),
        "{}",
        bad_query.body
    );
}

// Actions, on both backends.

async fn resolving_a_review_resolves_it_with_the_note_and_audits_who_did_it(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let review = impossible_transition(&app, "sub_cr", "cus_cr").await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let path = format!("/admin/reviews/{}", review.id);
    let queue = browser.open("/admin/reviews").await;
    assert!(
        queue.body.contains(&format!(r#"href="{path}""#)),
        "{}",
        queue.body
    );

    let done = browser
        .submit(
            &path,
            &format!("{path}/resolve"),
            &[("note", "Stripe shows it canceled; the revival was a test")],
        )
        .await;
    assert_eq!(
        (done.status, done.location()),
        (StatusCode::SEE_OTHER, path.as_str())
    );

    let stored = app.store.get_review(review.id).await.unwrap().unwrap();
    assert!(stored.resolved_at_ms.is_some());
    assert_eq!(
        stored.resolution.as_deref(),
        Some("accepted: Stripe shows it canceled; the revival was a test")
    );
    let audit = app
        .store
        .list_audit(Some(&format!("review:{}", review.id)), 0, 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].action, "resolve");
    assert!(audit[0].actor.starts_with("console:"), "{}", audit[0].actor);
    assert_eq!(
        audit[0].note,
        "Stripe shows it canceled; the revival was a test"
    );

    let page = browser.open(&path).await;
    assert!(page.body.contains(&audit[0].actor), "the page shows who");
    assert!(
        !page.body.contains("/resolve\""),
        "no actions once resolved"
    );
    let open = browser.open("/admin/reviews?state=open").await;
    assert!(!open.body.contains(&format!(r#"href="{path}""#)));
    // Resolving again is refused, and not audited.
    let again = browser
        .post(
            &format!("{path}/resolve"),
            &[("csrf", &page.csrf()), ("note", "again")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(app.store.list_audit(None, 0, 10).await.unwrap().len(), 1);
}

async fn a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let review = impossible_transition(&app, "sub_csrf", "cus_csrf").await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let path = format!("/admin/reviews/{}", review.id);
    let mut other = Browser::new(&app);
    other.log_in().await;
    let others_token = other.open("/admin").await.csrf();

    for csrf in [None, Some(""), Some("0000"), Some(others_token.as_str())] {
        let mut form = vec![("note", "forged")];
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        for action in ["resolve", "refresh", "release"] {
            let page = browser.post(&format!("{path}/{action}"), &form).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{action} with {csrf:?}");
        }
    }
    let stored = app.store.get_review(review.id).await.unwrap().unwrap();
    assert_eq!(stored, ReviewRow { ..review.clone() });
    assert!(app.store.list_audit(None, 0, 10).await.unwrap().is_empty());
    // Without a session at all: to the login page, nothing done.
    let anonymous = Browser::new(&app);
    let page = anonymous
        .post(&format!("{path}/resolve"), &[("csrf", "x"), ("note", "n")])
        .await;
    assert_eq!(page.location(), "/admin/login");
    assert!(app
        .store
        .get_review(review.id)
        .await
        .unwrap()
        .unwrap()
        .resolved_at_ms
        .is_none());
}

async fn refreshing_a_review_notes_what_stripe_says_and_audits_it(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let review = impossible_transition(&app, "sub_rf", "cus_rf").await;
    let sub = Sub::new("sub_rf", "cus_rf", "canceled", now() + 86400);
    app.stripe
        .put_subscription(subscription_object(&sub, Shape::Basil));
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let path = format!("/admin/reviews/{}", review.id);
    let done = browser.submit(&path, &format!("{path}/refresh"), &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);

    let stored = app.store.get_review(review.id).await.unwrap().unwrap();
    let said = stored.refresh_outcome.expect("the refresh is noted");
    assert!(said.starts_with("stripe says canceled"), "{said}");
    assert!(stored.resolved_at_ms.is_none(), "a refresh leaves it open");
    let audit = app.store.list_audit(None, 0, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (
            audit[0].action.as_str(),
            audit[0].target.as_str(),
            audit[0].note.as_str()
        ),
        (
            "refresh",
            format!("review:{}", review.id).as_str(),
            said.as_str()
        )
    );
    let page = browser.open(&path).await;
    assert!(page.body.contains(&said), "{}", page.body);
}

async fn replaying_a_failed_event_from_its_page_audits_it(backend: Backend) {
    let app = spawn_app_on(backend).await;
    // A subscription with no period end anywhere: recorded as failed.
    let object = json!({"id": "sub_rp", "object": "subscription", "customer": "cus_rp", "status": "active",
                        "items": {"data": [{"id": "si_1", "price": {"id": "price_1"}}]}});
    let event = envelope(
        "evt_rp",
        "customer.subscription.updated",
        now(),
        Shape::Basil,
        object,
    );
    assert_eq!(app.deliver(&event).await, "failed");
    let mut browser = Browser::new(&app);
    browser.log_in().await;

    let lookup = browser.get("/admin/events?id=evt_rp").await;
    assert_eq!(lookup.location(), "/admin/events/evt_rp");
    let page = browser.open("/admin/events/evt_rp").await;
    assert!(
        page.body.contains("current_period_end"),
        "the error is shown"
    );
    assert!(
        page.body
            .contains("&quot;customer&quot;: &quot;cus_rp&quot;"),
        "the payload is pretty-printed: {}",
        page.body
    );
    let done = browser
        .submit("/admin/events/evt_rp", "/admin/events/evt_rp/replay", &[])
        .await;
    assert_eq!(
        (done.status, done.location()),
        (StatusCode::SEE_OTHER, "/admin/events/evt_rp")
    );
    let row = app.store.get_event("evt_rp").await.unwrap().unwrap();
    assert_eq!(row.outcome, "failed", "the same payload fails the same way");
    assert!(row.source == "webhook" || row.source == "replay");
    let audit = app
        .store
        .list_audit(Some("event:evt_rp"), 0, 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].action, "replay");
    assert!(
        audit[0].note.starts_with("replayed evt_rp: failed"),
        "{}",
        audit[0].note
    );
    assert!(browser
        .open("/admin/events/evt_rp")
        .await
        .body
        .contains(&audit[0].actor));

    // A replay of an event that did not fail is refused, and not audited.
    let sub = Sub::new("sub_ok", "cus_ok", "active", now() + 86400);
    let ok = subscription_event(
        "evt_ok",
        "customer.subscription.created",
        now(),
        &sub,
        Shape::Basil,
    );
    app.deliver(&ok).await;
    let refused = browser
        .submit("/admin/events/evt_rp", "/admin/events/evt_ok/replay", &[])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(app.store.list_audit(None, 0, 10).await.unwrap().len(), 1);
}

async fn replaying_a_failed_event_from_a_review_puts_the_entry_on_the_review(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let object = json!({"id": "sub_rr", "object": "subscription", "customer": "cus_rr", "status": "active",
                        "items": {"data": [{"id": "si_1", "price": {"id": "price_1"}}]}});
    let event = envelope(
        "evt_rr",
        "customer.subscription.updated",
        now(),
        Shape::Basil,
        object,
    );
    assert_eq!(app.deliver(&event).await, "failed");
    let review = app
        .open_review("unknown_shape", "the failure is flagged")
        .await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let path = format!("/admin/reviews/{}", review.id);
    let page = browser.open(&path).await;
    assert!(page.body.contains("Replay evt_rr"), "{}", page.body);
    let done = browser
        .submit(&path, &format!("{path}/replay"), &[("event_id", "evt_rr")])
        .await;
    assert_eq!(
        (done.status, done.location()),
        (StatusCode::SEE_OTHER, path.as_str())
    );
    let audit = app
        .store
        .list_audit(Some(&format!("review:{}", review.id)), 0, 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].action, "replay");
    assert!(
        audit[0].note.starts_with("replayed evt_rr: failed"),
        "{}",
        audit[0].note
    );
    assert!(browser.open(&path).await.body.contains(&audit[0].note));
    // An unknown event is 404, and not audited.
    let missing = browser
        .submit(
            &path,
            &format!("{path}/replay"),
            &[("event_id", "evt_none")],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(app.store.list_audit(None, 0, 10).await.unwrap().len(), 1);
}

async fn releasing_a_held_revocation_ends_access_and_audits_it(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.hold_revocations = true).await;
    let sub = Sub::new("sub_hold", "cus_hold", "active", now() + 20 * 86400);
    app.deliver(&subscription_event(
        "evt_hold_1",
        "customer.subscription.created",
        now() - 100,
        &sub,
        Shape::Basil,
    ))
    .await;
    app.stripe.push_event(subscription_event(
        "evt_hold_2",
        "customer.subscription.deleted",
        now() - 50,
        &sub.status("canceled"),
        Shape::Basil,
    ));
    app.reconcile().await;
    assert!(app.access_for_customer("cus_hold").await.has_access, "held");
    let hold = app
        .open_review("revocation_by_reconciler", "a review holds it")
        .await;

    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let path = format!("/admin/reviews/{}", hold.id);
    let page = browser.open(&path).await;
    assert!(
        page.body.contains("Release the held revocation"),
        "{}",
        page.body
    );
    let done = browser
        .submit(
            &path,
            &format!("{path}/release"),
            &[("note", "customer confirmed")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);

    let r = app.access_for_customer("cus_hold").await;
    assert!(!r.has_access, "{r:?}");
    let stored = app.store.get_review(hold.id).await.unwrap().unwrap();
    assert!(stored.resolved_at_ms.is_some());
    let audit = app.store.list_audit(None, 0, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].action, "release_hold");
    assert!(
        audit[0].note.contains("customer confirmed"),
        "{}",
        audit[0].note
    );

    // A review that holds nothing offers no release, and refuses one.
    let other = impossible_transition(&app, "sub_nohold", "cus_nohold").await;
    let path = format!("/admin/reviews/{}", other.id);
    assert!(!browser.open(&path).await.body.contains("Release the held"));
    let refused = browser
        .submit(&path, &format!("{path}/release"), &[("note", "n")])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(app
        .store
        .get_review(other.id)
        .await
        .unwrap()
        .unwrap()
        .resolved_at_ms
        .is_none());
}

// Pages.

async fn the_review_page_shows_has_access_the_record_and_the_event_timeline(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let review = impossible_transition(&app, "sub_rv", "cus_rv").await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let page = browser.open(&format!("/admin/reviews/{}", review.id)).await;
    let r = app.access_for_customer("cus_rv").await;
    for expected in [
        "impossible_transition",
        "canceled -&gt; active",
        "HasAccess now",
        r.detail.as_str(),
        "evt_sub_rv_1",
        "evt_sub_rv_2",
        "customer.subscription.deleted",
        "ignored",
    ] {
        let escaped = expected.replace('\'', "&#39;");
        assert!(
            page.body.contains(expected) || page.body.contains(&escaped),
            "{expected:?} missing from {}",
            page.body
        );
    }
    assert!(page.body.contains(r#"<span class="no">no</span>"#));
    // Newest first: the revival, then the cancellation.
    let timeline = &page.body[page.body.find("Events for this subscription").unwrap()..];
    assert!(timeline.find("evt_sub_rv_2").unwrap() < timeline.find("evt_sub_rv_1").unwrap());
}

async fn the_subject_page_shows_has_access_subscriptions_and_queued_notifications(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    app.stripe.set_product_features("prod_basic", &["export"]);
    let sub = Sub::new("sub_sj", "cus_sj", "active", now() + 86400);
    app.deliver(&subscription_event(
        "evt_sj",
        "customer.subscription.created",
        now() - 10,
        &sub,
        Shape::Basil,
    ))
    .await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let empty = browser.open("/admin/subjects").await;
    assert!(empty.body.contains("Subject lookup"));
    let page = browser.open("/admin/subjects?customer_id=cus_sj").await;
    assert!(
        page.body.contains(r#"<span class="yes">yes</span>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("sub_sj"));
    assert!(page.body.contains("None queued."));
    // ListEntitlements: the product's feature, as HasAccess(feature) says.
    let features = &page.body[page
        .body
        .find("<h2>Features</h2>")
        .expect("a features section")..];
    assert!(features.contains("<td>export</td>"), "{features}");
    assert!(
        features.contains("feature export from product prod_basic"),
        "{features}"
    );
    let both = browser
        .get("/admin/subjects?customer_id=cus_sj&user_id=u")
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
}

async fn the_overview_counts_open_reviews_by_reason_and_failed_events(backend: Backend) {
    let app = spawn_app_on(backend).await;
    impossible_transition(&app, "sub_ov", "cus_ov").await;
    let object = json!({"id": "sub_ovf", "object": "subscription", "customer": "cus_ovf", "status": "active",
                        "items": {"data": [{"id": "si_1", "price": {"id": "price_1"}}]}});
    let event = envelope(
        "evt_ovf",
        "customer.subscription.updated",
        now(),
        Shape::Basil,
        object,
    );
    assert_eq!(app.deliver(&event).await, "failed");
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let page = browser.open("/admin").await;
    assert!(
        page.body.contains("<b>2</b>"),
        "two open reviews: {}",
        page.body
    );
    assert!(
        page.body.contains("<b>1</b>failed events in the last 24 h"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(">impossible_transition</a></td><td>1</td>"),
        "{}",
        page.body
    );
    let filtered = browser
        .open("/admin/reviews?state=open&reason=unknown_shape")
        .await;
    assert!(filtered.body.contains("unknown_shape"));
    assert!(!filtered.body.contains("impossible_transition</td>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_and_session_ids_never_reach_the_logs_of_a_real_server() {
    use crate::helpers::{ServerProcess, TestDatabase};
    let db = TestDatabase::create(Backend::Sqlite).await;
    let stripe = crate::fake_stripe::FakeStripe::start().await;
    // A free port for the console (the server logs it before the line the
    // harness waits for).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let env = [
        ("RUST_LOG", "debug"),
        ("TOLLGATE_ADMIN_HTTP_ADDR", addr.as_str()),
    ];
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &env).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &'static str| {
        http.post(format!("http://{addr}/admin/login"))
            .form(&[("token", token)])
            .send()
    };
    assert_eq!(login("wrong-token-value").await.unwrap().status(), 401);
    let ok = login(ADMIN_TOKEN).await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let session = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("tollgate_admin=")
        .to_owned();
    let page = http
        .get(format!("http://{addr}/admin"))
        .header("cookie", format!("tollgate_admin={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(logs.contains("console login"), "{logs}");
    for secret in [ADMIN_TOKEN, "wrong-token-value", session.as_str()] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    server.terminate().await;
}

// The audit log outside the console.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_actions_are_listed_by_admin_list_audit_and_the_cli() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let review = impossible_transition(&app, "sub_au", "cus_au").await;
    let mut browser = Browser::new(&app);
    browser.log_in().await;
    let path = format!("/admin/reviews/{}", review.id);
    browser
        .submit(&path, &format!("{path}/resolve"), &[("note", "seen")])
        .await;

    let listed = app
        .admin()
        .list_audit(tollgate::proto::ListAuditRequest {
            target: format!("review:{}", review.id),
            before_id: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(
        (
            listed.entries[0].action.as_str(),
            listed.entries[0].note.as_str()
        ),
        ("resolve", "seen")
    );
    assert_eq!(listed.next_before_id, 0, "one page");
    let unauthorized = app
        .admin_with_token(Some("nope"))
        .list_audit(tollgate::proto::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unauthorized.code(), tonic::Code::Unauthenticated);

    let addr = format!("http://{}", app.grpc_addr);
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["admin", "--addr", &addr, "audit", "list"])
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("resolve") && text.contains(&format!("review:{}", review.id)),
        "{text}"
    );
}
