//! The console's HTML, compiled into the binary (maud escapes every
//! value). Plain forms and links: no JavaScript, no assets fetched, one
//! small inline stylesheet that reads at phone width.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::Session;
use crate::oversight::{EventPage, Overview, ReviewPage, SubjectPage};
use crate::policy::Decision;
use crate::store::{AuditRow, EventRow, NotificationRow, ReviewRow};
use crate::subject::Subject;
use crate::subscription::SubscriptionRecord;

const STYLE: &str = r#"
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center}
header a{color:#fff}header strong{margin-right:auto}
header form{margin:0}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
a{color:#0b57d0}a:focus,button:focus,input:focus,select:focus,textarea:focus{outline:3px solid #f5a623;outline-offset:1px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.92rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e1e4ea;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef0f4}
.scroll{overflow-x:auto}
dl{display:grid;grid-template-columns:minmax(8rem,max-content) 1fr;gap:.25rem 1rem;background:#fff;padding:.75rem;margin:0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
pre{background:#fff;border:1px solid #e1e4ea;padding:.75rem;overflow-x:auto;font-size:.85rem}
form.inline{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.5rem 0}
label{display:flex;flex-direction:column;font-size:.9rem;gap:.2rem}
input,select,textarea,button{font:inherit;padding:.35rem .5rem;border:1px solid #9aa3b2;border-radius:4px;background:#fff}
button{background:#0b57d0;color:#fff;border-color:#0b57d0;cursor:pointer}
button.danger{background:#b3261e;border-color:#b3261e}
header button{background:transparent;border-color:#fff}
.actions{display:grid;gap:.75rem;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr))}
.actions form{background:#fff;padding:.75rem;border:1px solid #e1e4ea;margin:0}
.yes{color:#146c2e;font-weight:600}.no{color:#b3261e;font-weight:600}
.error{background:#fdecea;border:1px solid #b3261e;padding:.75rem}
.muted{color:#5d6577}
.cards{display:grid;gap:.75rem;grid-template-columns:repeat(auto-fit,minmax(13rem,1fr))}
.card{background:#fff;border:1px solid #e1e4ea;padding:.75rem}.card b{font-size:1.6rem;display:block}
@media (max-width:40rem){dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:.5rem}main{padding:.5rem}}
"#;

/// Milliseconds since the epoch, as a readable UTC time.
fn at_ms(ms: i64) -> String {
    crate::clock::rfc3339(ms.div_euclid(1000))
}

fn at_secs(secs: i64) -> String {
    crate::clock::rfc3339(secs)
}

fn opt_secs(secs: Option<i64>) -> String {
    secs.filter(|s| *s > 0).map_or("—".to_owned(), at_secs)
}

/// The hidden field every state-changing form carries.
fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tollgate admin" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "Tollgate admin" }
                    @if let Some(session) = session {
                        nav aria-label="Console" {
                            a href="/admin" { "Overview" } " · "
                            a href="/admin/reviews" { "Reviews" } " · "
                            a href="/admin/subjects" { "Subjects" } " · "
                            a href="/admin/events" { "Events" }
                        }
                        form method="post" action="/admin/logout" {
                            (csrf(session))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form.inline method="post" action="/admin/login" {
                label {
                    "Admin token"
                    input type="password" name="token" autocomplete="current-password" required autofocus;
                }
                button type="submit" { "Log in" }
            }
            p.muted { "The token is the server's TOLLGATE_ADMIN_TOKEN." }
        },
    )
}

pub fn error(session: Option<&Session>, status: u16, message: &str) -> Markup {
    layout(
        "Error",
        session,
        html! {
            h1 { "Error " (status) }
            p.error role="alert" { (message) }
            p { a href="/admin" { "Back to the overview" } }
        },
    )
}

pub fn overview(session: &Session, o: &Overview) -> Markup {
    let open: i64 = o.open_reviews.iter().map(|(_, n)| n).sum();
    layout(
        "Overview",
        Some(session),
        html! {
            h1 { "Overview" }
            div.cards {
                div.card { b { (open) } a href="/admin/reviews" { "open reviews" } }
                div.card { b { (o.failed_events_24h) } "failed events in the last 24 h" }
                div.card { b { (o.dead_notifications) } "dead notifications" }
                div.card { b { (o.queued_notifications) } "notifications queued" }
            }
            h2 { "Open reviews by reason" }
            @if o.open_reviews.is_empty() {
                p { "No open reviews." }
            } @else {
                table {
                    thead { tr { th { "Reason" } th { "Open" } } }
                    tbody {
                        @for (reason, n) in &o.open_reviews {
                            tr {
                                td { a href={ "/admin/reviews?state=open&reason=" (reason) } { (reason) } }
                                td { (n) }
                            }
                        }
                    }
                }
            }
            h2 { "Reconciler" }
            dl {
                dt { "Last run (this process)" }
                dd { (opt_secs(o.reconciler_last_run)) }
                dt { "Lag behind Stripe's newest event" }
                dd { (o.reconciler_lag_secs.map_or("—".to_owned(), |s| format!("{s} s"))) }
                dt { "Last drift sweep" }
                dd { (opt_secs(o.last_sweep)) }
                dt { "Now" }
                dd { (at_secs(o.now)) }
            }
        },
    )
}

/// The review list's filter, as in its query string.
pub struct ReviewQuery<'a> {
    pub state: &'a str,
    pub reason: &'a str,
}

pub fn reviews(
    session: &Session,
    q: &ReviewQuery<'_>,
    rows: &[ReviewRow],
    next: Option<i64>,
) -> Markup {
    const REASONS: &[&str] = &[
        "impossible_transition",
        "same_second_tie",
        "payload_mismatch",
        "unknown_shape",
        "customer_without_user",
        "dead_notification",
        "revocation_by_reconciler",
        "store_refused",
        "thin_event_unread",
    ];
    layout(
        "Reviews",
        Some(session),
        html! {
            h1 { "Reviews" }
            form.inline method="get" action="/admin/reviews" {
                label {
                    "State"
                    select name="state" {
                        @for s in ["open", "resolved", "all"] {
                            option value=(s) selected[q.state == s] { (s) }
                        }
                    }
                }
                label {
                    "Reason"
                    input name="reason" value=(q.reason) list="reasons" placeholder="any";
                    datalist id="reasons" { @for r in REASONS { option value=(r) {} } }
                }
                button type="submit" { "Filter" }
            }
            @if rows.is_empty() {
                p { "No reviews match." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "#" } th { "Created" } th { "Reason" } th { "Subject" } th { "Subscription" } th { "State" } } }
                    tbody {
                        @for r in rows {
                            tr {
                                td { a href={ "/admin/reviews/" (r.id) } { "Review " (r.id) } }
                                td { (at_ms(r.created_at_ms)) }
                                td { (r.reason) }
                                td { (r.subject) }
                                td { (r.subscription_id.as_deref().unwrap_or("—")) }
                                td { @if r.resolved_at_ms.is_some() { "resolved" } @else { "open" } }
                            }
                        }
                    }
                } }
            }
            @if let Some(before) = next {
                p { a href={ "/admin/reviews?state=" (q.state) "&reason=" (q.reason) "&before=" (before) } { "Older reviews →" } }
            }
        },
    )
}

/// A subject in words: "customer cus_1", "user 42".
fn who(subject: &Subject) -> String {
    match subject {
        Subject::User(u) => format!("user {u}"),
        Subject::Customer(c) => format!("customer {c}"),
    }
}

fn decision(d: &Result<Decision, String>) -> Markup {
    match d {
        Err(why) => html! { p.error { "HasAccess could not answer: " (why) } },
        Ok(d) => html! {
            dl {
                dt { "Has access" }
                dd { @if d.has_access { span.yes { "yes" } } @else { span.no { "no" } } }
                dt { "Reason" } dd { (d.reason.as_str()) }
                dt { "Explanation" } dd { (d.detail) }
                dt { "Subscription" } dd { (if d.subscription_id.is_empty() { "—" } else { &d.subscription_id }) }
                dt { "Status" } dd { (d.status.map_or("—", |s| s.as_str())) }
                dt { "Access until" } dd { (opt_secs(Some(d.access_until))) }
                dt { "Verified with Stripe" } dd { (opt_secs(Some(d.verified_at))) }
            }
        },
    }
}

/// ListEntitlements as a table: one row per feature known for the
/// subject's products.
fn entitlements(listed: &Result<Vec<(String, Decision)>, String>) -> Markup {
    match listed {
        Err(why) => html! { p.error { "ListEntitlements could not answer: " (why) } },
        Ok(rows) if rows.is_empty() => html! {
            p.muted { "No features known for this subject's products (none attached in Stripe, or their maps could not be read)." }
        },
        Ok(rows) => html! {
            table {
                thead { tr { th { "Feature" } th { "Access" } th { "Reason" } th { "Until" } th { "Explanation" } } }
                tbody {
                    @for (feature, d) in rows {
                        tr {
                            td { (feature) }
                            td { @if d.has_access { span.yes { "yes" } } @else { span.no { "no" } } }
                            td { (d.reason.as_str()) }
                            td { (opt_secs(Some(d.access_until))) }
                            td { (d.detail) }
                        }
                    }
                }
            }
        },
    }
}

fn subscription(s: &SubscriptionRecord) -> Markup {
    html! {
        dl {
            dt { "Id" } dd { (s.id) }
            dt { "Customer" } dd { a href={ "/admin/subjects?customer_id=" (s.customer_id) } { (s.customer_id) } }
            dt { "User" } dd { @match &s.user_id { Some(u) => a href={ "/admin/subjects?user_id=" (u) } { (u) }, None => "—" } }
            dt { "Status" } dd { (s.status.map_or("— (no snapshot yet)", |s| s.as_str())) }
            dt { "Period end" } dd { (opt_secs(s.current_period_end)) }
            dt { "Paid through" } dd { (opt_secs(s.paid_through)) }
            dt { "Trial end" } dd { (opt_secs(s.trial_end)) }
            dt { "Cancels" } dd {
                @if s.cancel_at_period_end { "at period end" }
                @else if let Some(at) = s.cancel_at { (at_secs(at)) }
                @else { "—" }
            }
            dt { "Past due since" } dd { (opt_secs(s.past_due_since)) }
            dt { "Last seen out of dunning" } dd { (opt_secs(s.recovered_at)) }
            dt { "Prices" } dd { (s.items.iter().map(|i| i.price_id.as_str()).collect::<Vec<_>>().join(", ")) }
            dt { "Snapshot" } dd { (opt_secs(Some(s.snapshot_created))) " from "
                @if s.snapshot_event_id.is_empty() { "—" } @else { a href={ "/admin/events/" (s.snapshot_event_id) } { (s.snapshot_event_id) } } }
            dt { "Verified with Stripe" } dd { (opt_secs(Some(s.verified_at))) }
            dt { "Held by review" } dd { @match s.hold_review_id { Some(r) => a href={ "/admin/reviews/" (r) } { "Review " (r) }, None => "—" } }
        }
    }
}

fn timeline(events: &[EventRow]) -> Markup {
    html! {
        @if events.is_empty() {
            p { "No events name this subscription." }
        } @else {
            div.scroll { table {
                thead { tr { th { "Event" } th { "Type" } th { "Created" } th { "Received" } th { "Outcome" } th { "Error" } } }
                tbody {
                    @for e in events {
                        tr {
                            td { a href={ "/admin/events/" (e.id) } { (e.id) } }
                            td { (e.event_type) }
                            td { (at_secs(e.created)) }
                            td { (at_ms(e.received_at_ms)) }
                            td { (e.outcome) }
                            td { (e.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            } }
        }
    }
}

fn audit(entries: &[AuditRow]) -> Markup {
    html! {
        @if entries.is_empty() {
            p { "Nothing done here through the console yet." }
        } @else {
            div.scroll { table {
                thead { tr { th { "When" } th { "Who" } th { "What" } th { "Note" } } }
                tbody {
                    @for a in entries {
                        tr { td { (at_ms(a.at_ms)) } td { (a.actor) } td { (a.action) } td { (a.note) } }
                    }
                }
            } }
        }
    }
}

pub fn review(session: &Session, p: &ReviewPage) -> Markup {
    let r = &p.review;
    let open = r.resolved_at_ms.is_none();
    let failed: Vec<&EventRow> = p
        .timeline
        .iter()
        .filter(|e| e.outcome == "failed")
        .collect();
    layout(
        &format!("Review {}", r.id),
        Some(session),
        html! {
            h1 { "Review " (r.id) ": " (r.reason) }
            dl {
                dt { "State" } dd { @if open { "open" } @else { "resolved " (at_ms(r.resolved_at_ms.unwrap_or(0))) } }
                dt { "Reason" } dd { (r.reason) }
                dt { "Details" } dd { (r.details) }
                dt { "Subject" } dd { (r.subject) }
                dt { "Event" } dd { @match &r.event_id { Some(e) => a href={ "/admin/events/" (e) } { (e) }, None => "—" } }
                dt { "Created" } dd { (at_ms(r.created_at_ms)) }
                dt { "What Stripe said (refresh)" } dd id="refresh-outcome" { (r.refresh_outcome.as_deref().unwrap_or("not refreshed yet")) }
                @if let Some(res) = &r.resolution { dt { "Resolution" } dd { (res) } }
            }
            @if open {
                h2 { "Actions" }
                div.actions {
                    form method="post" action={ "/admin/reviews/" (r.id) "/resolve" } {
                        (csrf(session))
                        label { "Note" textarea name="note" rows="2" maxlength="2000" required {} }
                        p { button type="submit" { "Resolve (keep the state)" } }
                    }
                    @if r.subscription_id.is_some() {
                        form method="post" action={ "/admin/reviews/" (r.id) "/refresh" } {
                            (csrf(session))
                            p { "Re-read the subscription from Stripe and apply it; the review stays open." }
                            button type="submit" { "Refresh from Stripe" }
                        }
                    }
                    @if p.holds_revocation {
                        form method="post" action={ "/admin/reviews/" (r.id) "/release" } {
                            (csrf(session))
                            p { "This review keeps access that Stripe says has ended." }
                            label { "Note" textarea name="note" rows="2" maxlength="2000" required {} }
                            p { button.danger type="submit" { "Release the held revocation" } }
                        }
                    }
                    @for e in &failed {
                        form method="post" action={ "/admin/reviews/" (r.id) "/replay" } {
                            (csrf(session))
                            input type="hidden" name="event_id" value=(e.id);
                            p { "Event " (e.id) " failed: " (e.error.as_deref().unwrap_or("")) }
                            button type="submit" { "Replay " (e.id) }
                        }
                    }
                }
            }
            h2 { "HasAccess now" }
            @if let Some(subject) = &p.subject { p.muted { "Asked about " (who(subject)) "." } }
            (decision(&p.access))
            h2 { "Subscription" }
            @match &p.subscription {
                Some(s) => (subscription(s)),
                None => p { "No subscription record." },
            }
            h2 { "Events for this subscription" }
            (timeline(&p.timeline))
            h2 { "Audit log" }
            (audit(&p.audit))
        },
    )
}

pub fn event_lookup(session: &Session) -> Markup {
    layout(
        "Events",
        Some(session),
        html! {
            h1 { "Look up an event" }
            form.inline method="get" action="/admin/events" {
                label { "Event id" input name="id" placeholder="evt_..." required; }
                button type="submit" { "Look up" }
            }
        },
    )
}

pub fn event(session: &Session, p: &EventPage) -> Markup {
    let e = &p.event;
    layout(
        &format!("Event {}", e.id),
        Some(session),
        html! {
            h1 { "Event " (e.id) }
            dl {
                dt { "Type" } dd { (e.event_type) }
                dt { "Outcome" } dd id="outcome" { (e.outcome) }
                dt { "Error" } dd { (e.error.as_deref().unwrap_or("—")) }
                dt { "Created (Stripe)" } dd { (at_secs(e.created)) }
                dt { "Received" } dd { (at_ms(e.received_at_ms)) " via " (e.source) }
                dt { "Processed" } dd { (e.processed_at_ms.map_or("—".to_owned(), at_ms)) }
                dt { "Live mode" } dd { (if e.livemode { "live" } else { "test" }) }
                dt { "API version" } dd { (e.api_version.as_deref().unwrap_or("—")) }
                dt { "Payload SHA-256" } dd { (e.payload_sha256) }
            }
            @if e.outcome == "failed" {
                form.inline method="post" action={ "/admin/events/" (e.id) "/replay" } {
                    (csrf(session))
                    button type="submit" { "Replay this event" }
                }
            }
            h2 { "Payload" }
            pre { code { (p.payload) } }
            h2 { "Audit log" }
            (audit(&p.audit))
        },
    )
}

pub fn subject(
    session: &Session,
    user_id: &str,
    customer_id: &str,
    page: Option<&SubjectPage>,
) -> Markup {
    layout(
        "Subjects",
        Some(session),
        html! {
            h1 { "Subject lookup" }
            form.inline method="get" action="/admin/subjects" {
                label { "User id" input name="user_id" value=(user_id); }
                label { "or customer id" input name="customer_id" value=(customer_id) placeholder="cus_..."; }
                button type="submit" { "Look up" }
            }
            @if let Some(p) = page {
                h2 { "HasAccess now" }
                p.muted { "Asked about " (who(&p.subject)) "." }
                (decision(&p.access))
                h2 { "Features" }
                (entitlements(&p.entitlements))
                h2 { "Subscriptions" }
                @if p.subscriptions.is_empty() { p { "None linked." } }
                @for s in &p.subscriptions { (subscription(s)) br; }
                h2 { "Queued notifications" }
                (notifications(&p.notifications))
            }
        },
    )
}

fn notifications(rows: &[NotificationRow]) -> Markup {
    html! {
        @if rows.is_empty() {
            p { "None queued." }
        } @else {
            div.scroll { table {
                thead { tr { th { "#" } th { "Kind" } th { "Subscription" } th { "Change" } th { "Created" } th { "Attempts" } th { "State" } } }
                tbody {
                    @for n in rows {
                        tr {
                            td { (n.id) }
                            td { (n.kind) }
                            td { (n.subscription_id) }
                            td { (n.old_status) " → " (n.new_status) }
                            td { (at_ms(n.created_at_ms)) }
                            td { (n.attempts) }
                            td { @if n.dead { "dead: " (n.last_error.as_deref().unwrap_or("")) } @else { "queued" } }
                        }
                    }
                }
            } }
        }
    }
}
