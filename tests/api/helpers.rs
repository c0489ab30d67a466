//! Test harness: the real application on port 0 with a fresh database, and
//! typed helpers to talk to it the way Stripe and a product backend do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use tollgate::access::Staleness;
use tollgate::config::Config;
use tollgate::stripe::StripeOptions;

use crate::fake_stripe::FakeStripe;
use tollgate::policy::Policy;
use tollgate::proto::admin_client::AdminClient;
use tollgate::proto::entitlements_client::EntitlementsClient;
use tollgate::proto::{HasAccessRequest, HasAccessResponse};
use tollgate::signature::{self, Secrets};
use tollgate::startup::Application;
use tollgate::store::{self, Store, StoreOptions};
use tonic::service::interceptor::InterceptedService;

pub const SECRET: &str = "whsec_test_primary";
pub const STRIPE_KEY: &str = "sk_test_tollgate";
pub const ADMIN_TOKEN: &str = "admin-test-token";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the suite uses (trust auth), overridable.
pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether a missing PostgreSQL must fail the run instead of skipping.
fn postgres_required() -> bool {
    std::env::var("TOLLGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

/// Checks once per run whether PostgreSQL answers.
async fn postgres_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    if let Some(a) = AVAILABLE.get() {
        return *a;
    }
    use sqlx::Connection;
    let ok = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::PgConnection::connect(&pg_admin_url()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    *AVAILABLE.get_or_init(|| ok)
}

/// Returns false (after saying so) when the test must be skipped.
pub async fn backend_ready(backend: Backend, test: &str) -> bool {
    if backend == Backend::Sqlite || postgres_available().await {
        return true;
    }
    if postgres_required() {
        panic!(
            "PostgreSQL at {} is required (TOLLGATE_REQUIRE_POSTGRES) but unreachable",
            pg_admin_url()
        );
    }
    eprintln!(
        "SKIPPED {test} on postgres: no PostgreSQL at {}; set TOLLGATE_TEST_PG_URL or start one",
        pg_admin_url()
    );
    false
}

/// A fresh, empty database for one test.
pub struct TestDatabase {
    pub url: String,
    /// Keeps the SQLite file's directory alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A PostgreSQL connection holding `table` of `db` locked in an open
/// transaction: every statement on it waits until the caller ends that
/// transaction (`COMMIT` or `ROLLBACK`), or drops the connection.
pub async fn lock_table(db: &TestDatabase, table: &str) -> sqlx::PgConnection {
    use sqlx::{Connection, Executor};
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute(format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE").as_str())
        .await
        .unwrap();
    locker
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("tollgate.db");
                TestDatabase {
                    url: format!("sqlite://{}", path.display()),
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                use sqlx::{Connection, Executor};
                let name = format!(
                    "tollgate_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .subsec_nanos()
                );
                let mut admin = sqlx::PgConnection::connect(&pg_admin_url())
                    .await
                    .expect("connect to postgres");
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                let base = pg_admin_url();
                let url = match base.rfind('/') {
                    Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
                    _ => format!("{base}/{name}"),
                };
                TestDatabase {
                    url,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl TestDatabase {
    /// A SQLite file at `path`, in a directory the test owns.
    pub fn sqlite_at(path: &std::path::Path) -> TestDatabase {
        TestDatabase {
            url: format!("sqlite://{}", path.display()),
            _dir: None,
            pg_name: None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee; use a short-lived one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use sqlx::{Connection, Executor};
                if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// The admin console's port; `None` when no admin token is set.
    pub console_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    pub grpc: EntitlementsClient<Channel>,
    pub secret: String,
    /// The same store the app uses, opened separately, for assertions the
    /// public API cannot make (row counts, review records).
    pub store: Arc<dyn Store>,
    pub db: TestDatabase,
    /// The fake Stripe API this app's client talks to.
    pub stripe: FakeStripe,
    /// What the running application was built with, for [`TestApp::restart`].
    config: Config,
    clock: Option<Arc<dyn tollgate::clock::Clock>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn test_config(db_url: &str, stripe_base: &str) -> Config {
    Config {
        store: StoreOptions {
            url: db_url.to_owned(),
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
            // The default, so PostgreSQL runs write on several writers.
            writers: 4,
        },
        http_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        secrets: Secrets::parse(SECRET).unwrap(),
        signature_tolerance_secs: 300,
        user_id_metadata_key: "user_id".to_owned(),
        livemode: tollgate::livemode::Livemode::Test,
        policy: Policy::default(),
        stripe: StripeOptions {
            base_url: stripe_base.to_owned(),
            api_key: Some(STRIPE_KEY.to_owned()),
            max_rps: 1000,
            request_timeout: Duration::from_secs(10),
            max_retries: 2,
        },
        staleness: Staleness {
            stale_after: Duration::from_secs(15 * 60),
            stale_grace: Duration::from_secs(24 * 3600),
        },
        refresh_timeout: Duration::from_secs(2),
        cache_max_bytes: 64 << 20,
        cache_ttl: Duration::from_secs(600),
        // Tests run passes through Admin.Reconcile unless they enable this.
        reconciler_enabled: false,
        reconcile_interval: Duration::from_secs(3600),
        sweep_interval: Duration::from_secs(24 * 3600),
        hold_revocations: false,
        push: None,
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        api_token: None,
        limits: tollgate::config::ConnectionLimits::default(),
        console: tollgate::config::ConsoleOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
    }
}

fn init_test_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            tollgate::telemetry::init(tollgate::config::LogFormat::Human);
        }
    });
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, |_| {}).await
}

pub async fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDatabase::create(backend).await;
    spawn_app_in(db, configure).await
}

/// The application with a clock the test moves (see
/// [`tollgate::clock::ManualClock`]), for exact time edges.
pub async fn spawn_app_clocked(
    backend: Backend,
    clock: Arc<tollgate::clock::ManualClock>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let db = TestDatabase::create(backend).await;
    spawn(db, Some(clock), configure).await
}

/// The application on a database the test prepared itself.
pub async fn spawn_app_in(db: TestDatabase, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn(db, None, configure).await
}

async fn spawn(
    db: TestDatabase,
    clock: Option<Arc<tollgate::clock::ManualClock>>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    init_test_logs();
    let stripe = FakeStripe::start().await;
    let mut config = test_config(&db.url, &stripe.base_url());
    configure(&mut config);
    let secret = config.secrets.clone().first().to_owned();
    let store_options = config.store.clone();
    let clock: Option<Arc<dyn tollgate::clock::Clock>> =
        clock.map(|c| c as Arc<dyn tollgate::clock::Clock>);
    let running = start(config.clone(), clock.clone()).await;
    let store = store::connect(&store_options).await.expect("store opens");
    TestApp {
        http_addr: running.http_addr,
        grpc_addr: running.grpc_addr,
        console_addr: running.console_addr,
        http: reqwest::Client::new(),
        grpc: running.grpc,
        secret,
        store,
        db,
        stripe,
        config,
        clock,
        shutdown: Some(running.shutdown),
        server: Some(running.server),
    }
}

struct Running {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    console_addr: Option<SocketAddr>,
    grpc: EntitlementsClient<Channel>,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(config: Config, clock: Option<Arc<dyn tollgate::clock::Clock>>) -> Running {
    let app = match clock {
        Some(clock) => Application::build_with_clock(config, clock).await,
        None => Application::build(config).await,
    }
    .expect("application builds");
    let http_addr = app.http_addr();
    let grpc_addr = app.grpc_addr();
    let console_addr = app.console_addr();
    let (shutdown, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let grpc = EntitlementsClient::connect(format!("http://{grpc_addr}"))
        .await
        .expect("grpc connects");
    Running {
        http_addr,
        grpc_addr,
        console_addr,
        grpc,
        shutdown,
        server,
    }
}

pub fn now() -> i64 {
    use tollgate::clock::Clock;
    tollgate::clock::SystemClock.now_secs()
}

/// Adds `authorization: Bearer ...` to admin calls.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

pub type AdminApi = AdminClient<InterceptedService<Channel, BearerToken>>;

pub struct WebhookResponse {
    pub status: u16,
    pub body: Value,
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/stripe", self.http_addr)
    }

    /// POSTs `body` signed as Stripe signs it, now, with the app's secret.
    pub async fn post_webhook(&self, body: &Value) -> WebhookResponse {
        let raw = serde_json::to_vec(body).unwrap();
        let header = signature::header_for(&self.secret, now(), &raw);
        self.post_raw(raw, Some(&header)).await
    }

    /// POSTs raw bytes with an optional Stripe-Signature header.
    pub async fn post_raw(&self, body: Vec<u8>, header: Option<&str>) -> WebhookResponse {
        let mut req = self
            .http
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(h) = header {
            req = req.header("Stripe-Signature", h);
        }
        let resp = req.send().await.expect("webhook request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        WebhookResponse { status, body }
    }

    /// POSTs and asserts a first, successful delivery; returns its outcome.
    pub async fn deliver(&self, body: &Value) -> String {
        let r = self.post_webhook(body).await;
        assert_eq!(
            r.status, 200,
            "delivery of {} failed: {}",
            body["id"], r.body
        );
        assert_eq!(r.body["duplicate"], false, "{}", r.body);
        r.body["outcome"].as_str().unwrap().to_owned()
    }

    pub async fn has_access(
        &self,
        user_id: &str,
        customer_id: &str,
        product: &str,
    ) -> Result<HasAccessResponse, tonic::Status> {
        self.ask(HasAccessRequest {
            user_id: user_id.to_owned(),
            customer_id: customer_id.to_owned(),
            product: product.to_owned(),
            feature: String::new(),
        })
        .await
    }

    /// HasAccess as sent, with the app's API token when it has one.
    pub async fn ask(&self, request: HasAccessRequest) -> Result<HasAccessResponse, tonic::Status> {
        let mut request = tonic::Request::new(request);
        if let Some(token) = &self.config.api_token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        self.grpc
            .clone()
            .has_access(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// HasAccess for a feature of a customer.
    pub async fn feature_for_customer(
        &self,
        customer_id: &str,
        feature: &str,
    ) -> HasAccessResponse {
        self.ask(HasAccessRequest {
            customer_id: customer_id.to_owned(),
            feature: feature.to_owned(),
            ..Default::default()
        })
        .await
        .expect("has_access")
    }

    pub async fn access_for_user(&self, user_id: &str) -> HasAccessResponse {
        self.has_access(user_id, "", "").await.expect("has_access")
    }

    pub async fn access_for_customer(&self, customer_id: &str) -> HasAccessResponse {
        self.has_access("", customer_id, "")
            .await
            .expect("has_access")
    }

    /// What `GET /metrics` answers now (Prometheus text).
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.http_addr))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// An Admin client that sends the admin token.
    pub fn admin(&self) -> AdminApi {
        self.admin_with_token(Some(ADMIN_TOKEN))
    }

    /// An Admin client that sends `token` (or nothing).
    pub fn admin_with_token(&self, token: Option<&str>) -> AdminApi {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect_lazy();
        let header = token.map(|t| format!("Bearer {t}").parse().unwrap());
        AdminClient::with_interceptor(channel, BearerToken(header))
    }

    /// Runs one reconcile pass through the Admin API.
    pub async fn reconcile(&self) -> tollgate::proto::ReconcileResponse {
        self.admin()
            .reconcile(tollgate::proto::ReconcileRequest {})
            .await
            .expect("reconcile")
            .into_inner()
    }

    /// Every notification queued so far, acknowledged or not.
    pub async fn notifications(&self) -> Vec<tollgate::store::NotificationRow> {
        self.store.list_notifications(0, 1000, true).await.unwrap()
    }

    /// The open review raised for `reason` (the first, if several); panics
    /// with `why` when there is none.
    pub async fn open_review(&self, reason: &str, why: &str) -> tollgate::store::ReviewRow {
        self.store
            .list_reviews(true)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.reason == reason)
            .expect(why)
    }

    /// Waits (up to 10 s) for the review `event_id` raised for `reason` to
    /// note what the re-read from Stripe said, and returns the note.
    pub async fn review_note(&self, event_id: &str, reason: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let reviews = self.store.list_reviews(false).await.unwrap();
            let review = reviews
                .iter()
                .find(|r| r.event_id.as_deref() == Some(event_id) && r.reason == reason);
            if let Some(note) = review.and_then(|r| r.refresh_outcome.clone()) {
                return note;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no re-read noted on a {reason} review of {event_id}: {reviews:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn event_count(&self, id: &str) -> usize {
        usize::from(self.store.get_event(id).await.unwrap().is_some())
    }

    /// Stops the server and starts a new one on the same database, as a
    /// process restart would (new ports, empty cache).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// Like [`TestApp::restart`], with the configuration changed first (a
    /// key added, an option turned on), as an operator would.
    pub async fn restart_with(&mut self, configure: impl FnOnce(&mut Config)) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = self.server.take().expect("running");
        server.await.expect("server task").expect("clean stop");
        configure(&mut self.config);
        let mut config = self.config.clone();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.console.addr = "127.0.0.1:0".parse().unwrap();
        let running = start(config, self.clock.clone()).await;
        self.http_addr = running.http_addr;
        self.console_addr = running.console_addr;
        self.grpc_addr = running.grpc_addr;
        self.grpc = running.grpc;
        self.shutdown = Some(running.shutdown);
        self.server = Some(running.server);
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().unwrap().await.expect("server task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs one test body on SQLite and on PostgreSQL, as `sqlite::name` and
/// `postgres::name`. PostgreSQL runs are skipped, loudly, when no server
/// answers, unless `TOLLGATE_REQUIRE_POSTGRES=1`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::backend_ready($crate::helpers::Backend::Postgres, stringify!($name)).await {
                        super::$name($crate::helpers::Backend::Postgres).await;
                    }
                }
            )*
        }
    };
}

/// A real `tollgate serve` process, for tests that kill or run several.
pub struct ServerProcess {
    child: tokio::process::Child,
    /// Every line the server logged after it started listening.
    pub logs: Arc<std::sync::Mutex<Vec<String>>>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
}

impl ServerProcess {
    /// Delivers `event` to the webhook endpoint, signed as Stripe signs,
    /// expects a 200, and returns the answer's JSON.
    pub async fn deliver(&self, event: &Value) -> Value {
        let body = serde_json::to_vec(event).unwrap();
        let resp = reqwest::Client::new()
            .post(format!("http://{}/webhooks/stripe", self.http_addr))
            .header(
                "Stripe-Signature",
                signature::header_for(SECRET, now(), &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Starts the binary with `env` (on top of test defaults) and waits for
    /// it to log the addresses it bound.
    pub async fn start(db_url: &str, stripe_base: &str, env: &[(&str, &str)]) -> ServerProcess {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TOLLGATE_DATABASE_URL", db_url)
            .env("TOLLGATE_HTTP_ADDR", "127.0.0.1:0")
            .env("TOLLGATE_GRPC_ADDR", "127.0.0.1:0")
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("STRIPE_API_BASE", stripe_base)
            .env("STRIPE_API_KEY", STRIPE_KEY)
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            // The admin console's port, like the others, must not clash
            // between processes run side by side.
            .env("TOLLGATE_ADMIN_HTTP_ADDR", "127.0.0.1:0")
            .env("TOLLGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("tollgate binary starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (http_addr, grpc_addr) = loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .expect("server logs its addresses in time")
                .unwrap()
                .expect("server exited before listening");
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "listening" {
                let addr = |k: &str| {
                    v["fields"][k]
                        .as_str()
                        .unwrap()
                        .parse::<SocketAddr>()
                        .unwrap()
                };
                break (addr("http_addr"), addr("grpc_addr"));
            }
        };
        let show = std::env::var("TEST_LOG").is_ok();
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if show {
                    eprintln!("[server] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        ServerProcess {
            child,
            logs,
            http_addr,
            grpc_addr,
        }
    }

    /// SIGKILL: no draining, no cleanup, as in a crash.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then waits; returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.child.wait().await.ok().and_then(|s| s.code())
    }

    pub async fn entitlements(&self) -> EntitlementsClient<Channel> {
        EntitlementsClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .unwrap()
    }
}

/// Runs the `tollgate` binary with `args` in a clean environment (only
/// `PATH`, plus `env`), so no `TOLLGATE_*` variable of the caller leaks in.
pub async fn run_tollgate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("tollgate finishes within a minute")
        .expect("tollgate binary runs")
}

/// A loopback address nothing listens on (bound, then released).
pub fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
