//! The Python examples under examples/python, run against a real server so
//! they cannot rot. They need `pip install -r examples/python/requirements.txt`;
//! without it each test says SKIPPED, unless TOLLGATE_REQUIRE_EXAMPLES=1
//! (set by .ci/run) makes that a failure.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tollgate::notify::PushOptions;

use crate::helpers::{now, spawn_app, spawn_app_with, unused_addr, Backend, TestApp};
use crate::stripe::{subscription_event, subscription_object, Shape, Sub};

const DAY: i64 = 86_400;

fn example(name: &str) -> String {
    format!("{}/examples/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Whether python3 with grpcio, grpcio-tools and stripe is here; false
/// (after saying so) when the test must be skipped.
fn python_ready(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import grpc, grpc_tools, stripe"])
            .output()
            .map_err(|e| format!("no python3: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    });
    let Err(why) = ready else {
        return true;
    };
    if std::env::var("TOLLGATE_REQUIRE_EXAMPLES").is_ok_and(|v| v == "1" || v == "true") {
        panic!(
            "the Python examples are required (TOLLGATE_REQUIRE_EXAMPLES) but cannot run: {why}"
        );
    }
    eprintln!("SKIPPED {test}: {why}; pip install -r examples/python/requirements.txt to run it");
    false
}

/// Runs examples/python/has_access.py; returns (exit code, stdout, stderr).
async fn has_access_py(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new("python3")
        .arg(example("has_access.py"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn subscribe(app: &TestApp, user: &str) {
    let sub = Sub {
        user_id: Some(user.to_owned()),
        ..Sub::new("sub_example", "cus_example", "active", now() + 30 * DAY)
    };
    app.deliver(&subscription_event(
        "evt_example",
        "customer.subscription.created",
        now() - 10,
        &sub,
        Shape::Basil,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_allows_a_subscriber_and_denies_anyone_else() {
    if !python_ready("the_python_client_allows_a_subscriber_and_denies_anyone_else") {
        return;
    }
    let app = spawn_app().await;
    subscribe(&app, "user_py").await;
    let addr = app.grpc_addr.to_string();

    let (granted, out, err) = has_access_py(&["--addr", &addr, "--user-id", "user_py"]).await;
    let (denied, no, no_err) = has_access_py(&["--addr", &addr, "--user-id", "stranger"]).await;

    assert_eq!((granted, out.as_str()), (Some(0), "allow"), "{err}");
    assert!(err.contains("REASON_ACTIVE"), "the detail is logged: {err}");
    assert_eq!((denied, no.as_str()), (Some(1), "deny"), "{no_err}");
    assert!(no_err.contains("REASON_NO_SUBSCRIPTION"), "{no_err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_retries_once_then_fails_open_or_closed_as_told() {
    if !python_ready("the_python_client_retries_once_then_fails_open_or_closed_as_told") {
        return;
    }
    let down = unused_addr().to_string();
    let base = [
        "--addr",
        down.as_str(),
        "--user-id",
        "u",
        "--deadline",
        "0.2",
    ];

    let started = Instant::now();
    let (closed, closed_out, closed_err) = has_access_py(&base).await;
    let open_args: Vec<&str> = base.iter().copied().chain(["--on-error", "open"]).collect();
    let (open, open_out, _) = has_access_py(&open_args).await;

    assert_eq!(
        (closed, closed_out.as_str()),
        (Some(1), "deny"),
        "{closed_err}"
    );
    assert_eq!((open, open_out.as_str()), (Some(0), "allow"));
    assert_eq!(
        closed_err.matches("retrying once").count(),
        1,
        "{closed_err}"
    );
    assert!(closed_err.contains("failing closed"), "{closed_err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "deadlines hold"
    );
}

/// The receiver as a child process, and its stdout lines.
struct PyReceiver {
    _child: tokio::process::Child,
    url: String,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl PyReceiver {
    async fn start(secret: &str) -> PyReceiver {
        let mut child = tokio::process::Command::new("python3")
            .arg(example("notification_receiver.py"))
            .args(["--port", "0", "--secret", secret])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the receiver starts")
            .unwrap()
            .expect("the receiver prints its address");
        let url = first
            .strip_prefix("listening on ")
            .expect("listening on URL")
            .to_owned();
        PyReceiver {
            _child: child,
            url,
            lines,
        }
    }

    /// The next notification it applied.
    async fn next_applied(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("a notification arrives in time")
            .unwrap()
            .expect("the receiver is running");
        serde_json::from_str(&line).expect("one JSON line per notification")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_receiver_verifies_and_applies_a_pushed_notification() {
    if !python_ready("the_python_receiver_verifies_and_applies_a_pushed_notification") {
        return;
    }
    let mut receiver = PyReceiver::start("whsec_notify_example").await;
    let url = receiver.url.clone();
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.push = Some(PushOptions {
            url,
            secret: "whsec_notify_example".into(),
            backoff: Duration::from_millis(100),
            max_attempts: 5,
        });
    })
    .await;

    // A record that looks expired, then Stripe says it renewed: the
    // refresh restores access and queues one notification.
    let sub = Sub::new("sub_py_push", "cus_py_push", "active", now() - 60);
    app.deliver(&subscription_event(
        "evt_py_push",
        "customer.subscription.updated",
        now() - 30 * DAY,
        &sub,
        Shape::Basil,
    ))
    .await;
    app.stripe.put_subscription(subscription_object(
        &Sub {
            period_end: now() + 30 * DAY,
            ..sub
        },
        Shape::Basil,
    ));
    assert!(app.access_for_customer("cus_py_push").await.has_access);
    let applied = receiver.next_applied().await;

    assert_eq!(applied["applied"], true);
    assert_eq!(applied["kind"], "ACCESS_RESTORED");
    assert_eq!(applied["customer_id"], "cus_py_push");
    assert_eq!(applied["new_access"], true);
    // Acknowledged by its 200: the outbox row is done.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.notifications().await[0].acked_at_ms.is_none() {
        assert!(Instant::now() < deadline, "the 200 acknowledged it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_receiver_refuses_a_bad_signature_and_ignores_a_duplicate() {
    if !python_ready("the_python_receiver_refuses_a_bad_signature_and_ignores_a_duplicate") {
        return;
    }
    let secret = "whsec_notify_example";
    let receiver = PyReceiver::start(secret).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "id": 9, "kind": "ACCESS_REVOKED", "user_id": "u", "customer_id": "cus_1",
        "subscription_id": "sub_1", "old_status": "active", "new_status": "canceled",
        "old_access": true, "new_access": false, "old_access_until": 1_798_761_600_i64,
        "new_access_until": 0, "reason": "canceled", "created_at_ms": 1_796_083_200_123_i64,
    }))
    .unwrap();
    let post = |header: String| {
        reqwest::Client::new()
            .post(&receiver.url)
            .header("Tollgate-Signature", header)
            .body(body.clone())
            .send()
    };
    // Signed as Tollgate's dispatcher signs.
    let good = || tollgate::signature::header_for(secret, now(), &body);

    let forged = post(tollgate::signature::header_for("whsec_other", now(), &body))
        .await
        .unwrap();
    let old = post(tollgate::signature::header_for(secret, now() - 600, &body))
        .await
        .unwrap();
    let first = post(good()).await.unwrap();
    let again: Value = post(good()).await.unwrap().json().await.unwrap();

    assert_eq!(forged.status(), 400);
    assert_eq!(old.status(), 400, "outside the 5-minute tolerance");
    assert_eq!(first.status(), 200);
    assert_eq!(again["duplicate"], true);
}
