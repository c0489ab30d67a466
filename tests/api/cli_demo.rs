//! `tollgate demo`, the real binary against a running server with no Stripe
//! API key: each scenario ends in the answer HasAccess then gives.

use tollgate::livemode::Livemode;
use tollgate::proto::Reason;

use crate::helpers::{run_tollgate, spawn_app_with, Backend, TestApp, SECRET};

/// A server as a newcomer runs it: no STRIPE_API_KEY.
async fn spawn_without_stripe(livemode: Livemode) -> TestApp {
    spawn_app_with(Backend::Sqlite, |c| {
        c.stripe.api_key = None;
        c.livemode = livemode;
    })
    .await
}

async fn demo(
    app: &TestApp,
    user: &str,
    extra: &[&str],
    secret: &str,
) -> (Option<i32>, String, String) {
    let grpc = app.grpc_addr.to_string();
    let http = app.http_addr.to_string();
    let mut args = vec![
        "demo",
        "--user-id",
        user,
        "--addr",
        &grpc,
        "--addr-http",
        &http,
    ];
    args.extend_from_slice(extra);
    let out = run_tollgate(&args, &[("STRIPE_WEBHOOK_SECRET", secret)]).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_subscribes_a_user_and_prints_access_after_each_step() {
    let app = spawn_without_stripe(Livemode::Any).await;

    let (code, stdout, stderr) = demo(&app, "alice", &[], SECRET).await;

    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let steps: Vec<&str> = stdout.lines().filter(|l| l.contains(" access: ")).collect();
    assert_eq!(steps.len(), 3, "{stdout}");
    assert!(steps[0].contains("checkout.session.completed") && steps[0].contains("access: no"));
    assert!(
        steps[1].contains("customer.subscription.created") && steps[1].contains("REASON_ACTIVE")
    );
    assert!(steps[2].contains("invoice.paid") && steps[2].contains("access: yes"));
    let answer = app.access_for_user("alice").await;
    assert!(answer.has_access, "{answer:?}");
    assert_eq!(answer.reason, Reason::Active as i32);
    assert!(answer.subscription_id.starts_with("sub_demo_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_past_due_demo_ends_in_grace_and_the_canceled_one_in_a_denial() {
    let app = spawn_without_stripe(Livemode::Test).await;

    let (late, late_out, late_err) = demo(&app, "bob", &["--scenario", "past-due"], SECRET).await;
    let (gone, gone_out, gone_err) = demo(&app, "carol", &["--scenario", "canceled"], SECRET).await;

    assert_eq!(late, Some(0), "{late_out}{late_err}");
    assert!(late_out.contains("invoice.payment_failed"), "{late_out}");
    let bob = app.access_for_user("bob").await;
    assert!(bob.has_access);
    assert_eq!(bob.reason, Reason::PastDueGrace as i32);
    assert_eq!(gone, Some(0), "{gone_out}{gone_err}");
    assert!(
        gone_out.contains("customer.subscription.deleted"),
        "{gone_out}"
    );
    let carol = app.access_for_user("carol").await;
    assert!(!carol.has_access);
    assert_eq!(carol.reason, Reason::Canceled as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_the_demo_twice_uses_fresh_ids() {
    let app = spawn_without_stripe(Livemode::Test).await;

    let (first, ..) = demo(&app, "dave", &["--scenario", "canceled"], SECRET).await;
    let (second, stdout, stderr) = demo(&app, "dave", &[], SECRET).await;

    assert_eq!(first, Some(0));
    assert_eq!(second, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("applied"),
        "new events, not duplicates: {stdout}"
    );
    assert!(app.access_for_user("dave").await.has_access);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_says_so_when_the_server_applies_only_live_events() {
    let app = spawn_without_stripe(Livemode::Live).await;

    let (code, _, stderr) = demo(&app, "erin", &[], SECRET).await;

    assert_eq!(code, Some(1));
    assert!(stderr.contains("only live-mode events"), "{stderr}");
    assert!(stderr.contains("TOLLGATE_LIVEMODE"), "{stderr}");
    assert!(!app.access_for_user("erin").await.has_access);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_the_wrong_secret_says_which_secret_to_pass() {
    let app = spawn_without_stripe(Livemode::Test).await;

    let (code, _, stderr) = demo(&app, "frank", &[], "whsec_wrong").await;

    assert_eq!(code, Some(1));
    assert!(stderr.contains("400"), "{stderr}");
    assert!(stderr.contains("STRIPE_WEBHOOK_SECRET"), "{stderr}");
    assert!(
        !stderr.contains("whsec_wrong"),
        "never the secret: {stderr}"
    );
}
