//! `tollgate demo`: a subscription lifecycle for one user, sent to a running
//! server as Stripe would send it (test-mode events, signed with the
//! endpoint secret by [`crate::signature::header_for`], the code the server
//! verifies with), with the HasAccess answer after each step. It needs no
//! Stripe account, and doubles as a smoke test after a deploy.
//!
//! Ids are fresh on every run (`sub_demo_<random>`), so a run never collides
//! with an earlier one.

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::parse_endpoint;
use crate::proto;
use crate::proto::entitlements_client::EntitlementsClient;
use crate::signature::{self, Secrets};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The product user id to subscribe (linked through Checkout's
    /// client_reference_id, as a real integration would).
    #[arg(long)]
    pub user_id: String,
    /// gRPC address of the server, for HasAccess: HOST:PORT, with or without
    /// http://.
    #[arg(
        long,
        env = "TOLLGATE_ADDR",
        default_value = "http://127.0.0.1:50051",
        value_parser = parse_endpoint
    )]
    pub addr: String,
    /// HTTP address of the server, where webhooks go (/webhooks/stripe is
    /// added): HOST:PORT, with or without http://.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = parse_endpoint)]
    pub addr_http: String,
    /// The server's webhook signing secret (whsec_...); the first one when
    /// several are listed.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Which lifecycle to play.
    #[arg(long, value_enum, default_value = "active")]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Checkout, subscription created active, invoice paid: access granted.
    Active,
    /// Then a payment fails and the subscription turns past_due: access
    /// kept through the past-due grace.
    PastDue,
    /// Then the subscription is deleted: access denied.
    Canceled,
}

impl Scenario {
    /// The name on the command line.
    fn name(self) -> &'static str {
        match self {
            Scenario::Active => "active",
            Scenario::PastDue => "past-due",
            Scenario::Canceled => "canceled",
        }
    }

    /// The final answer each scenario must end in, with the default policy.
    fn expected(self) -> (bool, proto::Reason) {
        match self {
            Scenario::Active => (true, proto::Reason::Active),
            Scenario::PastDue => (true, proto::Reason::PastDueGrace),
            Scenario::Canceled => (false, proto::Reason::Canceled),
        }
    }
}

/// The Stripe ids one run uses.
#[derive(Debug, Clone)]
pub struct DemoIds {
    pub customer: String,
    pub subscription: String,
    /// Prefix of event, invoice and session ids.
    pub run: String,
}

impl DemoIds {
    /// Fresh ids: `cus_demo_<random>`, `sub_demo_<random>`.
    pub fn fresh() -> DemoIds {
        // RandomState is seeded randomly per process; the time separates
        // runs within one.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        let run = format!("{:012x}", h.finish() & 0xffff_ffff_ffff);
        DemoIds {
            customer: format!("cus_demo_{run}"),
            subscription: format!("sub_demo_{run}"),
            run,
        }
    }
}

const API_VERSION: &str = "2025-03-31.basil";
const PRODUCT: &str = "prod_demo";
const DAY: i64 = 86_400;

fn envelope(ids: &DemoIds, n: usize, event_type: &str, created: i64, object: Value) -> Value {
    json!({
        "id": format!("evt_demo_{}_{n}", ids.run),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    })
}

fn subscription(ids: &DemoIds, status: &str, start: i64, period_end: i64) -> Value {
    let mut sub = json!({
        "id": ids.subscription,
        "object": "subscription",
        "customer": ids.customer,
        "status": status,
        "livemode": false,
        "cancel_at_period_end": false,
        "created": start,
        "start_date": start,
        "trial_end": null,
        "metadata": {},
        "items": {
            "object": "list",
            "has_more": false,
            "data": [{
                "id": format!("si_demo_{}", ids.run),
                "object": "subscription_item",
                "subscription": ids.subscription,
                "quantity": 1,
                "current_period_start": start,
                "current_period_end": period_end,
                "price": {
                    "id": "price_demo_monthly",
                    "object": "price",
                    "product": PRODUCT,
                    "lookup_key": "demo_monthly",
                    "recurring": { "interval": "month", "interval_count": 1 },
                    "unit_amount": 1000,
                    "currency": "usd",
                },
            }],
        },
    });
    if status == "canceled" {
        sub["canceled_at"] = json!(period_end.min(start + DAY));
        sub["ended_at"] = sub["canceled_at"].clone();
    }
    sub
}

fn invoice(ids: &DemoIds, n: usize, status: &str, start: i64, period_end: i64) -> Value {
    json!({
        "id": format!("in_demo_{}_{n}", ids.run),
        "object": "invoice",
        "customer": ids.customer,
        "status": status,
        "livemode": false,
        "amount_due": 1000,
        "amount_paid": if status == "paid" { 1000 } else { 0 },
        "currency": "usd",
        "attempted": true,
        "parent": {
            "type": "subscription_details",
            "subscription_details": { "subscription": ids.subscription, "metadata": {} },
        },
        "lines": {
            "object": "list",
            "has_more": false,
            "data": [{
                "id": format!("il_demo_{}_{n}", ids.run),
                "object": "line_item",
                "period": { "start": start, "end": period_end },
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": {
                        "subscription": ids.subscription,
                        "subscription_item": format!("si_demo_{}", ids.run),
                    },
                },
            }],
        },
    })
}

/// The events of `scenario` for `user`, in the order they are sent, each
/// one second after the last and the last one second before `now`.
pub fn lifecycle(user: &str, ids: &DemoIds, scenario: Scenario, now: i64) -> Vec<Value> {
    let start = now - 60;
    let period_end = start + 30 * DAY;
    let mut steps: Vec<(&str, Value)> = vec![
        (
            "checkout.session.completed",
            json!({
                "id": format!("cs_test_demo_{}", ids.run),
                "object": "checkout.session",
                "mode": "subscription",
                "status": "complete",
                "payment_status": "paid",
                "livemode": false,
                "client_reference_id": user,
                "customer": ids.customer,
                "subscription": ids.subscription,
                "metadata": {},
            }),
        ),
        (
            "customer.subscription.created",
            subscription(ids, "active", start, period_end),
        ),
        ("invoice.paid", invoice(ids, 2, "paid", start, period_end)),
    ];
    match scenario {
        Scenario::Active => {}
        Scenario::PastDue => {
            steps.push((
                "invoice.payment_failed",
                invoice(ids, 3, "open", period_end, period_end + 30 * DAY),
            ));
            steps.push((
                "customer.subscription.updated",
                subscription(ids, "past_due", start, period_end),
            ));
        }
        Scenario::Canceled => steps.push((
            "customer.subscription.deleted",
            subscription(ids, "canceled", start, period_end),
        )),
    }
    let first = now - steps.len() as i64;
    steps
        .into_iter()
        .enumerate()
        .map(|(n, (ty, object))| envelope(ids, n, ty, first + n as i64, object))
        .collect()
}

fn reason_name(reason: i32) -> &'static str {
    proto::Reason::try_from(reason)
        .map(|r| r.as_str_name())
        .unwrap_or("REASON_UNSPECIFIED")
}

/// Plays the scenario against the server, writing each step to `out`. Fails
/// when a delivery is refused, when the server ignores the events (a server
/// that applies only live-mode events), or when the final answer is not the
/// scenario's.
pub async fn run(args: DemoArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let secrets = Secrets::parse(&args.secret)
        .map_err(|_| anyhow::anyhow!("--secret (or STRIPE_WEBHOOK_SECRET) is empty"))?;
    let secret = secrets.first();
    let webhook_url = format!("{}/webhooks/stripe", args.addr_http.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("could not build an HTTP client")?;
    let channel = Channel::from_shared(args.addr.clone())
        .with_context(|| format!("invalid --addr {}", args.addr))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot reach the gRPC port at {}", args.addr))?;
    let mut grpc = EntitlementsClient::new(channel);

    let ids = DemoIds::fresh();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    writeln!(
        out,
        "user {}: customer {}, subscription {} (test mode, scenario {})",
        args.user_id,
        ids.customer,
        ids.subscription,
        args.scenario.name()
    )?;
    let events = lifecycle(&args.user_id, &ids, args.scenario, now);
    let total = events.len();
    let mut last = None;
    for (n, event) in events.iter().enumerate() {
        let event_type = event["type"].as_str().unwrap_or_default();
        let body = serde_json::to_vec(event).expect("BUG: json values serialize");
        let header = signature::header_for(secret, now, &body);
        let response = http
            .post(&webhook_url)
            .header("content-type", "application/json")
            .header("Stripe-Signature", header)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the webhook endpoint at {webhook_url}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let error = answer["error"].as_str().unwrap_or("no reason given");
            let hint = if status == reqwest::StatusCode::BAD_REQUEST {
                " (is --secret the server's STRIPE_WEBHOOK_SECRET?)"
            } else {
                ""
            };
            bail!("the server refused {event_type} with {status}: {error}{hint}");
        }
        let outcome = answer["outcome"].as_str().unwrap_or("?").to_owned();
        let access = grpc
            .has_access(proto::HasAccessRequest {
                user_id: args.user_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("HasAccess failed: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        writeln!(
            out,
            "{}/{total} {event_type:<30} {outcome:<8} access: {:<3} {} ({})",
            n + 1,
            if access.has_access { "yes" } else { "no" },
            reason_name(access.reason),
            access.detail,
        )?;
        // Checkout and the subscription are always applied by a server that
        // takes test-mode events; "ignored" means it takes only live ones.
        if n < 2 && outcome == "ignored" {
            bail!(
                "the server ignored test-mode event {}: it applies only live-mode events \
                 (TOLLGATE_LIVEMODE=live, or a live STRIPE_API_KEY). Run the demo against a \
                 server with TOLLGATE_LIVEMODE=test or any",
                event["id"].as_str().unwrap_or_default()
            );
        }
        last = Some(access);
    }
    let last = last.expect("BUG: every scenario has steps");
    let (granted, reason) = args.scenario.expected();
    if last.has_access != granted || last.reason != reason as i32 {
        bail!(
            "expected {} ({}) at the end, got {} ({}): {}",
            if granted { "access" } else { "no access" },
            reason.as_str_name(),
            if last.has_access {
                "access"
            } else {
                "no access"
            },
            reason_name(last.reason),
            last.detail
        );
    }
    writeln!(
        out,
        "ok: {} ends with {} ({}), as the {} scenario should",
        args.user_id,
        if granted { "access" } else { "no access" },
        reason.as_str_name(),
        args.scenario.name()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{classify, parse_envelope, DomainEvent};

    #[test]
    fn every_demo_event_parses_as_the_server_reads_it() {
        let ids = DemoIds::fresh();
        for scenario in [Scenario::Active, Scenario::PastDue, Scenario::Canceled] {
            let events = lifecycle("alice", &ids, scenario, 1_800_000_000);
            let mut created = 0;
            for event in events {
                let env = parse_envelope(&serde_json::to_vec(&event).unwrap()).unwrap();
                assert!(!env.livemode, "demo events are test mode");
                assert!(env.created > created, "strictly ordered");
                created = env.created;
                let domain = classify(&env, "user_id").unwrap();
                assert!(
                    !matches!(domain, DomainEvent::Unhandled),
                    "{}",
                    env.event_type
                );
            }
        }
    }

    #[test]
    fn each_run_has_fresh_ids() {
        let (a, b) = (DemoIds::fresh(), DemoIds::fresh());
        assert_ne!(a.subscription, b.subscription);
        assert!(a.subscription.starts_with("sub_demo_"));
    }
}
