//! The command-line clients of a running server: `tollgate admin ...` (the
//! gRPC Admin service), [`check`] (one HasAccess call, answered by the exit
//! status) and [`demo`] (a signed test-mode lifecycle). Each prints
//! readable tables, or JSON with `--json`.

pub mod check;
pub mod demo;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::proto;
use crate::proto::admin_client::AdminClient;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// gRPC address of a running `tollgate serve`: HOST:PORT, with or
    /// without http://.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true,
        value_parser = parse_endpoint
    )]
    pub addr: String,
    /// The server's TOLLGATE_ADMIN_TOKEN.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manual-review records.
    #[command(subcommand)]
    Reviews(ReviewsCommand),
    /// Look up or replay one Stripe event.
    #[command(subcommand)]
    Event(EventCommand),
    /// Re-read a subject's subscriptions from Stripe and show its access.
    Refresh(RefreshArgs),
    /// The access-change notification queue.
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Run one reconcile pass (event catch-up and sweep) now.
    Reconcile,
    /// What people did through the admin console (see `AuditCommand`).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    /// Not resolved yet.
    Open,
    /// Resolved by an admin.
    Resolved,
    /// Both.
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActionArg {
    /// Keep the state as it is.
    Accept,
    /// Re-read the subscription from Stripe, then resolve.
    Refresh,
}

#[derive(Debug, Subcommand)]
pub enum ReviewsCommand {
    /// List reviews (open ones by default).
    List {
        /// Which reviews to list.
        #[arg(long, value_enum, default_value = "open")]
        state: StateArg,
        /// Only reviews about this customer, user or subscription id.
        #[arg(long)]
        subject: Option<String>,
        /// Most reviews to list.
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Resolve a review.
    Resolve {
        /// The review's id (the ID column of `reviews list`).
        id: i64,
        /// What to do before resolving.
        #[arg(long, value_enum)]
        action: ActionArg,
        /// Why, kept with the resolution.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Did we get and process this event?
    Get {
        /// The Stripe event id (evt_...).
        id: String,
    },
    /// Re-run a failed event through the pipeline.
    Replay {
        /// The Stripe event id (evt_...).
        id: String,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RefreshArgs {
    /// The product's user id.
    #[arg(long)]
    pub user_id: Option<String>,
    /// A Stripe customer id (cus_...).
    #[arg(long)]
    pub customer_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// List notifications after a cursor (unacknowledged by default).
    List {
        /// Start after this cursor (the `next cursor` printed by the
        /// previous page).
        #[arg(long, default_value_t = 0)]
        cursor: i64,
        /// Most notifications to list.
        #[arg(long, default_value_t = 100)]
        limit: i32,
        /// Acknowledged ones too.
        #[arg(long)]
        include_acked: bool,
    },
    /// Acknowledge notifications by id.
    Ack {
        /// Notification ids, separated by spaces.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

fn review_json(r: &proto::Review) -> Value {
    json!({
        "id": r.id, "subject": r.subject, "subscription_id": r.subscription_id,
        "event_id": r.event_id, "reason": r.reason, "details": r.details,
        "created_at_ms": r.created_at_ms, "resolved_at_ms": r.resolved_at_ms,
        "resolution": r.resolution, "refresh_outcome": r.refresh_outcome,
    })
}

fn event_json(e: &proto::Event) -> Value {
    json!({
        "id": e.id, "type": e.r#type, "created": e.created, "livemode": e.livemode,
        "api_version": e.api_version, "payload_sha256": e.payload_sha256, "source": e.source,
        "received_at_ms": e.received_at_ms, "processed_at_ms": e.processed_at_ms,
        "outcome": e.outcome, "error": e.error,
    })
}

fn notification_json(n: &proto::Notification) -> Value {
    json!({
        "id": n.id, "kind": n.kind, "user_id": n.user_id, "customer_id": n.customer_id,
        "subscription_id": n.subscription_id, "old_status": n.old_status,
        "new_status": n.new_status, "old_access": n.old_access, "new_access": n.new_access,
        "old_access_until": n.old_access_until, "new_access_until": n.new_access_until,
        "reason": n.reason, "created_at_ms": n.created_at_ms, "acked": n.acked,
        "attempts": n.attempts, "dead": n.dead,
    })
}

pub(crate) fn access_json(a: &proto::HasAccessResponse) -> Value {
    json!({
        "has_access": a.has_access,
        "reason": proto::Reason::try_from(a.reason).map(|r| r.as_str_name()).unwrap_or("REASON_UNSPECIFIED"),
        "subscription_id": a.subscription_id, "status": a.status,
        "current_period_end": a.current_period_end, "access_until": a.access_until,
        "verified_at": a.verified_at, "detail": a.detail,
    })
}

/// Fields in unix seconds, shown as RFC 3339 in tables.
const SECONDS_FIELDS: &[&str] = &[
    "created",
    "current_period_end",
    "access_until",
    "verified_at",
    "old_access_until",
    "new_access_until",
];

/// A JSON record or row as people read it: unix seconds (the fields above)
/// and milliseconds (`*_ms`, renamed without the suffix) become RFC 3339
/// UTC, and 0 (no such time) becomes `-`. `--json` keeps the raw numbers.
pub(crate) fn human(v: &Value) -> Value {
    let time = |t: Option<i64>, scale: i64| match t {
        Some(0) | None => Value::from("-"),
        Some(t) => Value::from(crate::clock::rfc3339(t.div_euclid(scale))),
    };
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if let Some(stem) = k.strip_suffix("_ms") {
                        (stem.to_owned(), time(v.as_i64(), 1000))
                    } else if SECONDS_FIELDS.contains(&k.as_str()) {
                        (k.clone(), time(v.as_i64(), 1))
                    } else {
                        (k.clone(), human(v))
                    }
                })
                .collect(),
        ),
        Value::Array(rows) => Value::Array(rows.iter().map(human).collect()),
        other => other.clone(),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Renders rows as an aligned text table of `columns`.
pub fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// One record as `key: value` lines.
pub(crate) fn record(v: &Value) -> String {
    let Value::Object(map) = v else {
        return cell(v);
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    map.iter()
        .map(|(k, v)| format!("{k:<width$}  {}", cell(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An endpoint as gRPC clients want it: `127.0.0.1:50051` and
/// `localhost:50051` gain `http://`; a URL with a scheme is kept.
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address (try e.g. 127.0.0.1:50051)".to_owned());
    }
    Ok(if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    })
}

/// Runs one admin command; returns what to print.
pub async fn run(args: AdminArgs) -> anyhow::Result<String> {
    use anyhow::Context;
    let channel = Channel::from_shared(args.addr.clone())
        .with_context(|| format!("invalid --addr {}", args.addr))?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", args.addr))?;
    let token: Option<MetadataValue<_>> = match args.token.as_deref() {
        None => None,
        Some(t) => Some(format!("Bearer {}", t.trim()).parse().map_err(|_| {
            anyhow::anyhow!("the admin token has characters a header cannot carry")
        })?),
    };
    let mut client = AdminClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(t) = &token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    });
    let status = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    let (value, text) = match args.command {
        AdminCommand::Reviews(ReviewsCommand::List {
            state,
            subject,
            limit,
        }) => {
            let state = match state {
                StateArg::Open => proto::ReviewState::Open,
                StateArg::Resolved => proto::ReviewState::Resolved,
                StateArg::All => proto::ReviewState::All,
            };
            let resp = client
                .list_reviews(proto::ListReviewsRequest {
                    state: state as i32,
                    subject: subject.unwrap_or_default(),
                    limit,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = resp.reviews.iter().map(review_json).collect();
            let text = table(
                &rows.iter().map(human).collect::<Vec<_>>(),
                &[
                    "id",
                    "created_at",
                    "subject",
                    "subscription_id",
                    "reason",
                    "details",
                    "resolution",
                ],
            );
            (Value::Array(rows), text)
        }
        AdminCommand::Reviews(ReviewsCommand::Resolve { id, action, note }) => {
            let action = match action {
                ActionArg::Accept => proto::ResolveAction::Accept,
                ActionArg::Refresh => proto::ResolveAction::Refresh,
            };
            let review = client
                .resolve_review(proto::ResolveReviewRequest {
                    id,
                    note,
                    action: action as i32,
                })
                .await
                .map_err(status)?
                .into_inner();
            let v = review_json(&review);
            let text = record(&human(&v));
            (v, text)
        }
        AdminCommand::Event(command) => {
            let e = match command {
                EventCommand::Get { id } => client.get_event(proto::GetEventRequest { id }).await,
                EventCommand::Replay { id } => {
                    client.replay_event(proto::ReplayEventRequest { id }).await
                }
            }
            .map_err(status)?
            .into_inner();
            let v = event_json(&e);
            let text = record(&human(&v));
            (v, text)
        }
        AdminCommand::Refresh(subject) => {
            let resp = client
                .refresh_subject(proto::RefreshSubjectRequest {
                    user_id: subject.user_id.unwrap_or_default(),
                    customer_id: subject.customer_id.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let access = resp.access.as_ref().map(access_json).unwrap_or(Value::Null);
            let v = json!({ "subscriptions_refreshed": resp.subscriptions_refreshed, "access": access });
            let text = format!(
                "subscriptions_refreshed  {}\n{}",
                resp.subscriptions_refreshed,
                record(&human(&access))
            );
            (v, text)
        }
        AdminCommand::Notifications(NotificationsCommand::List {
            cursor,
            limit,
            include_acked,
        }) => {
            let resp = client
                .list_notifications(proto::ListNotificationsRequest {
                    cursor,
                    limit,
                    include_acked,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = resp.notifications.iter().map(notification_json).collect();
            let text = format!(
                "{}\nnext cursor: {}",
                table(
                    &rows.iter().map(human).collect::<Vec<_>>(),
                    &[
                        "id",
                        "created_at",
                        "kind",
                        "user_id",
                        "customer_id",
                        "old_status",
                        "new_status",
                        "reason",
                        "acked"
                    ]
                ),
                resp.next_cursor
            );
            (
                json!({ "notifications": rows, "next_cursor": resp.next_cursor }),
                text,
            )
        }
        AdminCommand::Notifications(NotificationsCommand::Ack { ids }) => {
            let resp = client
                .ack_notifications(proto::AckNotificationsRequest { ids })
                .await
                .map_err(status)?
                .into_inner();
            (
                json!({ "acked": resp.acked }),
                format!("acked {}", resp.acked),
            )
        }
        AdminCommand::Audit(AuditCommand::List {
            target,
            before,
            limit,
        }) => {
            let resp = client
                .list_audit(proto::ListAuditRequest {
                    target: target.unwrap_or_default(),
                    before_id: before,
                    limit,
                })
                .await
                .map_err(status)?
                .into_inner();
            audit_output(&resp)
        }
        AdminCommand::Reconcile => {
            let r = client
                .reconcile(proto::ReconcileRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let v = json!({
                "events_seen": r.events_seen, "events_applied": r.events_applied,
                "events_duplicate": r.events_duplicate, "events_other": r.events_other,
                "pages": r.pages, "swept": r.swept, "subscriptions_swept": r.subscriptions_swept,
                "access_corrections": r.access_corrections, "product_maps_changed": r.product_maps_changed, "errors": r.errors,
            });
            let text = record(&human(&v));
            (v, text)
        }
    };
    Ok(if args.json {
        serde_json::to_string_pretty(&value).expect("BUG: json values serialize")
    } else {
        text
    })
}

// `tollgate admin audit ...`: the admin console's audit log.

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List entries, newest first.
    List {
        /// Only entries about this target, e.g. review:12 or event:evt_1.
        #[arg(long)]
        target: Option<String>,
        /// Entries older than this id (the next page).
        #[arg(long, default_value_t = 0)]
        before: i64,
        /// Most entries to list.
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
}

fn audit_output(resp: &proto::ListAuditResponse) -> (Value, String) {
    let rows: Vec<Value> = resp
        .entries
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "at": crate::clock::rfc3339(a.at_ms.div_euclid(1000)),
                "actor": a.actor, "action": a.action, "target": a.target, "note": a.note,
            })
        })
        .collect();
    let mut text = table(&rows, &["id", "at", "actor", "action", "target", "note"]);
    if resp.next_before_id > 0 {
        text.push_str(&format!("\nnext page: --before {}", resp.next_before_id));
    }
    (
        json!({ "entries": rows, "next_before_id": resp.next_before_id }),
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_work_with_or_without_a_scheme() {
        assert_eq!(
            parse_endpoint("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(parse_endpoint("localhost:1").unwrap(), "http://localhost:1");
        assert_eq!(
            parse_endpoint("https://admin.internal:443").unwrap(),
            "https://admin.internal:443"
        );
        assert!(parse_endpoint(" ").is_err());
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        use crate::config::{Cli, Command};
        use clap::Parser;
        for argv in [
            vec![
                "tollgate",
                "admin",
                "--addr",
                "127.0.0.1:9",
                "--token",
                "t",
                "reconcile",
            ],
            vec![
                "tollgate",
                "admin",
                "reconcile",
                "--addr",
                "127.0.0.1:9",
                "--token",
                "t",
            ],
        ] {
            let Command::Admin(args) = Cli::try_parse_from(&argv).unwrap().command else {
                panic!("admin");
            };
            assert_eq!(args.addr, "http://127.0.0.1:9", "{argv:?}");
            assert_eq!(args.token.as_deref(), Some("t"), "{argv:?}");
        }
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            json!({"id": 1, "reason": "x"}),
            json!({"id": 22, "reason": "long reason"}),
        ];
        assert_eq!(
            table(&rows, &["id", "reason"]),
            "ID  REASON\n1   x\n22  long reason"
        );
    }

    #[test]
    fn tables_show_times_as_rfc3339_and_json_keeps_numbers() {
        let raw = json!({
            "id": 7, "created_at_ms": 1_798_761_599_123_i64, "resolved_at_ms": 0,
            "access_until": 1_798_761_600, "verified_at": 0, "detail": "x",
        });
        let shown = human(&raw);
        assert_eq!(shown["created_at"], "2026-12-31T23:59:59Z");
        assert_eq!(shown["resolved_at"], "-", "0 means no such time");
        assert_eq!(shown["access_until"], "2027-01-01T00:00:00Z");
        assert_eq!(shown["verified_at"], "-");
        assert_eq!((&shown["id"], &shown["detail"]), (&json!(7), &json!("x")));
        assert_eq!(raw["created_at_ms"], 1_798_761_599_123_i64, "untouched");
    }

    #[test]
    fn every_argument_of_every_command_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&crate::config::Cli::command(), "tollgate", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
