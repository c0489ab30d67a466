//! The examples under examples/python, examples/node and examples/go, run
//! against a real server so they cannot rot. Python needs `pip install -r
//! examples/python/requirements.txt`, Node `npm ci --prefix examples/node`,
//! Go the Debian packages .ci/run installs (the Go program is built once per
//! run, in GOPATH mode from /usr/share/gocode: no module proxy needed);
//! without them each test says SKIPPED, unless TOLLGATE_REQUIRE_EXAMPLES=1
//! (set by .ci/run) makes that a failure (Node only where `node` is
//! installed).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tollgate::notify::PushOptions;

use crate::helpers::{now, spawn_app, spawn_app_with, unused_addr, Backend, TestApp};
use crate::stripe::{subscription_event, subscription_object, Shape, Sub};

const DAY: i64 = 86_400;

/// Runs each listed test body for one language, as `module::name`.
macro_rules! in_language {
    ($module:ident, $lang:expr, $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($lang).await;
                }
            )*
        }
    };
}

in_language!(
    python,
    super::Lang::Python,
    the_client_allows_a_subscriber_and_denies_anyone_else,
    the_client_asks_about_a_feature,
    the_client_retries_once_then_fails_open_or_closed_as_told,
    the_receiver_verifies_and_applies_a_pushed_notification,
    the_receiver_refuses_a_bad_signature_and_ignores_a_duplicate,
);
in_language!(
    node,
    super::Lang::Node,
    the_client_allows_a_subscriber_and_denies_anyone_else,
    the_client_asks_about_a_feature,
    the_client_retries_once_then_fails_open_or_closed_as_told,
    the_receiver_verifies_and_applies_a_pushed_notification,
    the_receiver_refuses_a_bad_signature_and_ignores_a_duplicate,
);
// Go has the client only.
in_language!(
    go,
    super::Lang::Go,
    the_client_allows_a_subscriber_and_denies_anyone_else,
    the_client_asks_about_a_feature,
    the_client_retries_once_then_fails_open_or_closed_as_told,
);

/// Which examples a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Node,
    Go,
}

impl Lang {
    /// The command that runs the example `stem` (Go's is the binary
    /// [`Lang::check`] built).
    fn command(self, stem: &str) -> tokio::process::Command {
        let (program, dir, ext) = match self {
            Lang::Python => ("python3", "python", "py"),
            Lang::Node => ("node", "node", "mjs"),
            Lang::Go => {
                assert_eq!(stem, "has_access", "the Go example is a client only");
                return tokio::process::Command::new(go_binary());
            }
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg(format!(
            "{}/examples/{dir}/{stem}.{ext}",
            env!("CARGO_MANIFEST_DIR")
        ));
        cmd
    }

    /// Ok, or why this language's examples cannot run here. For Go this
    /// builds the program.
    fn check(self) -> Result<(), String> {
        let (program, probe) = match self {
            Lang::Python => ("python3", "import grpc, grpc_tools, stripe"),
            Lang::Node => ("node", "['@grpc/grpc-js','@grpc/proto-loader','stripe'].forEach(m => require.resolve(m, {paths: [process.argv[1]]}))"),
            Lang::Go => return build_go_example(),
        };
        let mut cmd = std::process::Command::new(program);
        match self {
            Lang::Python => cmd.args(["-c", probe]),
            _ => cmd.args([
                "-e",
                probe,
                &format!("{}/examples/node", env!("CARGO_MANIFEST_DIR")),
            ]),
        };
        let out = cmd.output().map_err(|e| format!("no {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let install = match self {
                Lang::Python => "pip install -r examples/python/requirements.txt",
                _ => "npm ci --prefix examples/node",
            };
            // Python's and Node's module errors both name "Error".
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .find(|l| l.contains("Error"))
                .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
                .unwrap_or("")
                .trim();
            Err(format!("{why} (run `{install}`)"))
        }
    }

    /// Whether the examples can run; false (after saying so) when the test
    /// must be skipped.
    fn ready(self, test: &str) -> bool {
        static PYTHON: OnceLock<Result<(), String>> = OnceLock::new();
        static NODE: OnceLock<Result<(), String>> = OnceLock::new();
        static GO: OnceLock<Result<(), String>> = OnceLock::new();
        let cell = match self {
            Lang::Python => &PYTHON,
            Lang::Node => &NODE,
            Lang::Go => &GO,
        };
        let Err(why) = cell.get_or_init(|| self.check()) else {
            return true;
        };
        let required =
            std::env::var("TOLLGATE_REQUIRE_EXAMPLES").is_ok_and(|v| v == "1" || v == "true");
        // Node is required only where it is installed.
        let installed = self != Lang::Node
            || std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
        if required && installed {
            panic!("the {self:?} examples are required (TOLLGATE_REQUIRE_EXAMPLES) but cannot run: {why}");
        }
        eprintln!("SKIPPED {test} for {self:?}: {why}");
        false
    }
}

/// The Debian packages the Go example builds from (as .ci/run installs them).
const GO_PACKAGES: &str = "golang-go golang-google-grpc-dev golang-google-protobuf-dev \
golang-github-golang-protobuf-1-5-dev protobuf-compiler protoc-gen-go protoc-gen-go-grpc";

/// Where the built Go example lives (under target/tmp).
fn go_binary() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-example/has_access")
}

/// Builds examples/go/main.go with the code examples/go/generate.sh makes
/// from proto/, in GOPATH mode against Debian's /usr/share/gocode (the
/// module proxy isn't needed, nor reachable on CI): the same source a user
/// builds with `go mod tidy && go run .`.
fn build_go_example() -> Result<(), String> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/go");
    let install = format!("run `apt-get install {GO_PACKAGES}`");
    let run = |cmd: &mut std::process::Command, what: &str| -> Result<(), String> {
        let out = cmd
            .output()
            .map_err(|e| format!("{what}: {e} ({install})"))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{what} failed: {} ({install})", stderr.trim()))
    };
    run(std::process::Command::new("go").arg("version"), "no go")?;

    // GOPATH/src/example.com/tollgate-example: main.go and, generated,
    // tollgatepb/ (the import path main.go names).
    let gopath = tempfile::tempdir().map_err(|e| e.to_string())?;
    let package = gopath.path().join("src/example.com/tollgate-example");
    std::fs::create_dir_all(&package).map_err(|e| e.to_string())?;
    std::fs::copy(examples.join("main.go"), package.join("main.go")).map_err(|e| e.to_string())?;
    run(
        std::process::Command::new(examples.join("generate.sh")).arg(&package),
        "examples/go/generate.sh",
    )?;

    // Built next to its final name, then renamed: a concurrent run never
    // sees half a binary.
    let binary = go_binary();
    let dir = binary.parent().unwrap();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let partial = dir.join(format!("has_access.{}", std::process::id()));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    run(
        std::process::Command::new("go")
            .args(["build", "-o"])
            .arg(&partial)
            .arg("example.com/tollgate-example")
            .current_dir(gopath.path())
            .env("GO111MODULE", "off")
            .env(
                "GOPATH",
                format!("{}:/usr/share/gocode", gopath.path().display()),
            )
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            // Kept between runs: a rebuild takes a second or two.
            .env("GOCACHE", tmp.join("go-cache")),
        "go build",
    )?;
    std::fs::rename(&partial, &binary).map_err(|e| e.to_string())
}

/// Runs the has_access example; returns (exit code, stdout, stderr).
async fn has_access_example(lang: Lang, args: &[&str]) -> (Option<i32>, String, String) {
    let out = lang
        .command("has_access")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the example runs");
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

async fn the_client_allows_a_subscriber_and_denies_anyone_else(lang: Lang) {
    if !lang.ready("the_client_allows_a_subscriber_and_denies_anyone_else") {
        return;
    }
    let app = spawn_app().await;
    subscribe(&app, "user_py").await;
    let addr = app.grpc_addr.to_string();

    let (granted, out, err) =
        has_access_example(lang, &["--addr", &addr, "--user-id", "user_py"]).await;
    let (denied, no, no_err) =
        has_access_example(lang, &["--addr", &addr, "--user-id", "stranger"]).await;

    assert_eq!((granted, out.as_str()), (Some(0), "allow"), "{err}");
    assert!(err.contains("REASON_ACTIVE"), "the detail is logged: {err}");
    assert_eq!((denied, no.as_str()), (Some(1), "deny"), "{no_err}");
    assert!(no_err.contains("REASON_NO_SUBSCRIPTION"), "{no_err}");
}

async fn the_client_asks_about_a_feature(lang: Lang) {
    if !lang.ready("the_client_asks_about_a_feature") {
        return;
    }
    let app = spawn_app().await;
    app.stripe.set_product_features("prod_basic", &["export"]);
    subscribe(&app, "user_ft").await;
    let addr = app.grpc_addr.to_string();
    let ask = |feature: &'static str| {
        let addr = addr.clone();
        async move {
            has_access_example(
                lang,
                &[
                    "--addr",
                    &addr,
                    "--user-id",
                    "user_ft",
                    "--feature",
                    feature,
                ],
            )
            .await
        }
    };
    let (granted, out, err) = ask("export").await;
    assert_eq!((granted, out.as_str()), (Some(0), "allow"), "{err}");
    assert!(
        err.contains("feature export from product prod_basic"),
        "{err}"
    );
    let (denied, no, no_err) = ask("sso").await;
    assert_eq!((denied, no.as_str()), (Some(1), "deny"), "{no_err}");
    assert!(no_err.contains("REASON_FEATURE_NOT_INCLUDED"), "{no_err}");
}

async fn the_client_retries_once_then_fails_open_or_closed_as_told(lang: Lang) {
    if !lang.ready("the_client_retries_once_then_fails_open_or_closed_as_told") {
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
    let (closed, closed_out, closed_err) = has_access_example(lang, &base).await;
    let open_args: Vec<&str> = base.iter().copied().chain(["--on-error", "open"]).collect();
    let (open, open_out, _) = has_access_example(lang, &open_args).await;

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

/// An example receiver as a child process, and its stdout lines.
struct Receiver {
    _child: tokio::process::Child,
    url: String,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Receiver {
    async fn start(lang: Lang, secret: &str) -> Receiver {
        let mut child = lang
            .command("notification_receiver")
            .args(["--port", "0", "--secret", secret])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the example runs");
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
        Receiver {
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

async fn the_receiver_verifies_and_applies_a_pushed_notification(lang: Lang) {
    if !lang.ready("the_receiver_verifies_and_applies_a_pushed_notification") {
        return;
    }
    let mut receiver = Receiver::start(lang, "whsec_notify_example").await;
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

async fn the_receiver_refuses_a_bad_signature_and_ignores_a_duplicate(lang: Lang) {
    if !lang.ready("the_receiver_refuses_a_bad_signature_and_ignores_a_duplicate") {
        return;
    }
    let secret = "whsec_notify_example";
    let receiver = Receiver::start(lang, secret).await;
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
