//! The README's client snippets, run as written against a real server so
//! they cannot rot. A fenced block preceded by `<!-- run: NAME -->` is
//! taken verbatim; only `localhost:50051` and `localhost:8080` become the
//! test server's ports. Python needs grpcio and grpcio-tools, Node the
//! packages in examples/node (`npm ci --prefix examples/node`), curl a
//! `curl`; without them a test says SKIPPED, unless
//! TOLLGATE_REQUIRE_EXAMPLES=1 (set by .ci/run) makes that a failure.

use std::path::Path;
use std::process::Stdio;

use crate::helpers::{now, spawn_app_with, TestApp};
use crate::stripe::{subscription_event, Shape, Sub};

const TOKEN: &str = "readme-test-token";

/// The body of the fenced block after `<!-- run: name -->` in README.md.
fn snippet(name: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let marker = format!("<!-- run: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let fence = after.find("```").expect("a fenced block after the marker");
    let body = &after[fence..];
    let start = body.find('\n').expect("a fence line") + 1;
    let end = body[start..].find("\n```").expect("a closing fence") + start;
    body[start..end].to_owned()
}

/// Whether `probe` runs; else SKIPPED (or a failure when examples are
/// required).
fn ready(test: &str, program: &str, args: &[&str], install: &str) -> bool {
    let ok = std::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let required =
        std::env::var("TOLLGATE_REQUIRE_EXAMPLES").is_ok_and(|v| v == "1" || v == "true");
    assert!(
        !required,
        "{test}: `{program}` cannot run this (TOLLGATE_REQUIRE_EXAMPLES is set): {install}"
    );
    eprintln!("SKIPPED {test}: {install}");
    false
}

/// A server where user_123 subscribes to a product carrying `export` and
/// `sso`; with `token`, the HTTP API is on.
async fn server(token: Option<&str>) -> TestApp {
    let app = spawn_app_with(crate::helpers::Backend::Sqlite, |c| {
        c.api_token = token.map(str::to_owned)
    })
    .await;
    app.stripe
        .set_product_features("prod_pro", &["export", "sso"]);
    let sub = Sub {
        product: "prod_pro".to_owned(),
        user_id: Some("user_123".to_owned()),
        ..Sub::new("sub_readme", "cus_readme", "active", now() + 30 * 86_400)
    };
    app.deliver(&subscription_event(
        "evt_readme",
        "customer.subscription.created",
        now() - 10,
        &sub,
        Shape::Basil,
    ))
    .await;
    app
}

fn localized(code: &str, app: &TestApp) -> String {
    code.replace("localhost:50051", &app.grpc_addr.to_string())
        .replace("localhost:8080", &app.http_addr.to_string())
}

async fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("the snippet runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_feature_snippet_runs_as_written() {
    let python_ok = ready(
        "the_readme_python_feature_snippet_runs_as_written",
        "python3",
        &["-c", "import grpc, grpc_tools"],
        "pip install -r examples/python/requirements.txt",
    );
    if !python_ok {
        return;
    }
    let app = server(None).await;
    let stubs = tempfile::tempdir().unwrap();
    let out_dir = stubs.path().to_str().unwrap();
    run(
        "python3",
        &[
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            &format!("--python_out={out_dir}"),
            &format!("--grpc_python_out={out_dir}"),
            "proto/tollgate/v1/entitlements.proto",
        ],
        &[],
    )
    .await;
    let code = localized(&snippet("features-python"), &app);
    let out = run("python3", &["-c", &code], &[("PYTHONPATH", out_dir)]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("True REASON_ACTIVE feature export from product prod_pro"),
        "{out}"
    );
    assert_eq!(
        lines[1..],
        ["export True REASON_ACTIVE", "sso True REASON_ACTIVE"],
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_node_feature_snippet_runs_as_written() {
    let resolve = "require.resolve('@grpc/grpc-js', {paths: ['examples/node']}); require.resolve('@grpc/proto-loader', {paths: ['examples/node']})";
    let node_ok = ready(
        "the_readme_node_feature_snippet_runs_as_written",
        "node",
        &["-e", resolve],
        "npm ci --prefix examples/node",
    );
    if !node_ok {
        return;
    }
    let app = server(None).await;
    let code = localized(&snippet("features-node"), &app);
    let modules = format!("{}/examples/node/node_modules", env!("CARGO_MANIFEST_DIR"));
    let out = run("node", &["-e", &code], &[("NODE_PATH", &modules)]).await;
    assert!(
        out.starts_with("true REASON_ACTIVE feature export from product prod_pro"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_snippet_runs_as_written() {
    if !ready(
        "the_readme_curl_snippet_runs_as_written",
        "curl",
        &["--version"],
        "install curl",
    ) {
        return;
    }
    let app = server(Some(TOKEN)).await;
    let code = localized(&snippet("http-curl"), &app);
    let out = run("sh", &["-c", &code], &[("TOLLGATE_API_TOKEN", TOKEN)]).await;
    let mut answers = serde_json::Deserializer::from_str(&out).into_iter::<serde_json::Value>();
    let access = answers.next().expect("an access answer").unwrap();
    assert_eq!(access["has_access"], true, "{out}");
    assert_eq!(access["reason"], "REASON_ACTIVE", "{out}");
    let listed = answers.next().expect("an entitlements answer").unwrap();
    let features: Vec<&str> = listed["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["feature"].as_str().unwrap())
        .collect();
    assert_eq!(features, ["export", "sso"], "{out}");
}
