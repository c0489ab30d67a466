//! `tollgate check`, the real binary against a running server: the exit
//! status is the answer (0 granted, 1 denied, 2 no answer).

use serde_json::Value;

use crate::helpers::{now, run_tollgate, spawn_app, unused_addr};
use crate::stripe::{subscription_event, Shape, Sub};

const DAY: i64 = 86_400;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_0_and_prints_the_answer_when_access_is_granted() {
    let app = spawn_app().await;
    let period_end = now() + 30 * DAY;
    let sub = Sub {
        user_id: Some("user_check_ok".to_owned()),
        ..Sub::new("sub_check_ok", "cus_check_ok", "active", period_end)
    };
    app.deliver(&subscription_event(
        "evt_check_ok",
        "customer.subscription.created",
        now() - 10,
        &sub,
        Shape::Basil,
    ))
    .await;

    // The address without http://, as people type it.
    let addr = app.grpc_addr.to_string();
    let out = run_tollgate(
        &["check", "--addr", &addr, "--user-id", "user_check_ok"],
        &[],
    )
    .await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("REASON_ACTIVE"), "{stdout}");
    assert!(stdout.contains("sub_check_ok"), "{stdout}");
    assert!(
        stdout.contains(&tollgate::clock::rfc3339(period_end)),
        "times are RFC 3339 in the table: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_1_when_access_is_denied() {
    let app = spawn_app().await;
    let addr = format!("http://{}", app.grpc_addr);

    let out = run_tollgate(&["check", "--addr", &addr, "--user-id", "user_nobody"], &[]).await;

    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("REASON_NO_SUBSCRIPTION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_takes_its_address_from_tollgate_addr() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();

    let out = run_tollgate(
        &["check", "--user-id", "user_nobody"],
        &[("TOLLGATE_ADDR", &addr)],
    )
    .await;

    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_2_when_the_server_is_unreachable() {
    let addr = unused_addr().to_string();

    let out = run_tollgate(&["check", "--addr", &addr, "--user-id", "u"], &[]).await;

    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    assert!(out.stdout.is_empty(), "errors go to stderr without --json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_2_on_bad_arguments() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();

    // clap's usage error: neither subject given.
    let none = run_tollgate(&["check", "--addr", &addr], &[]).await;
    // Both subjects at once.
    let both = run_tollgate(
        &[
            "check",
            "--addr",
            &addr,
            "--user-id",
            "u",
            "--customer-id",
            "c",
        ],
        &[],
    )
    .await;
    // The server's INVALID_ARGUMENT: an id over 255 bytes.
    let long = "u".repeat(300);
    let refused = run_tollgate(&["check", "--addr", &addr, "--user-id", &long], &[]).await;

    assert_eq!(none.status.code(), Some(2));
    assert_eq!(both.status.code(), Some(2));
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("InvalidArgument"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_json_prints_the_answer_and_its_errors_as_json_on_stdout() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();

    let out = run_tollgate(
        &[
            "check",
            "--addr",
            &addr,
            "--customer-id",
            "cus_none",
            "--json",
        ],
        &[],
    )
    .await;
    let answer: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let down = unused_addr().to_string();
    let failed = run_tollgate(&["check", "--addr", &down, "--user-id", "u", "--json"], &[]).await;
    let error: Value = serde_json::from_slice(&failed.stdout).expect("the error is JSON");

    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(answer["has_access"], false);
    assert_eq!(answer["reason"], "REASON_NO_SUBSCRIPTION");
    assert!(
        answer["access_until"].is_i64(),
        "raw numbers in JSON: {answer}"
    );
    assert!(answer["detail"].is_string());
    assert_eq!(failed.status.code(), Some(2));
    assert!(
        error["error"].as_str().unwrap().contains("cannot reach"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_with_json_prints_its_errors_as_json_on_stdout_too() {
    let down = unused_addr().to_string();

    let out = run_tollgate(&["admin", "--addr", &down, "--json", "reconcile"], &[]).await;

    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).expect("the error is JSON");
    assert!(error["error"].as_str().unwrap().contains(&down), "{error}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
