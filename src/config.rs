//! Command line and environment: every option is a flag and an environment
//! variable. Secrets are never echoed, not even by `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::access::Staleness;
pub use crate::clock::parse_duration;
use crate::livemode::Livemode;
use crate::notify::PushOptions;
use crate::policy::Policy;
use crate::signature::Secrets;
use crate::store::StoreOptions;
use crate::stripe::StripeOptions;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Access entitlements for products that bill with Stripe",
    long_about = "Tollgate ingests verified Stripe webhooks into an exactly-once subscription \
                  store and answers HasAccess over gRPC.\n\nEvery option can also be set through \
                  the environment variable shown next to it."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook (HTTP) and HasAccess (gRPC) servers; applies migrations first.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Operate a running server through its gRPC Admin service.
    Admin(crate::cli::AdminArgs),
    /// Ask a running server whether a user or customer has access; the exit
    /// status is the answer (0 granted, 1 denied, 2 error).
    Check(crate::cli::check::CheckArgs),
    /// Send a running server a signed, test-mode subscription lifecycle for
    /// a user and print HasAccess after each step (no Stripe account needed).
    Demo(crate::cli::demo::DemoArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format. Verbosity follows RUST_LOG (default: info).
    #[arg(
        long,
        env = "TOLLGATE_LOG_FORMAT",
        value_enum,
        default_value = "human",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database: sqlite://PATH (a file, created on first run, WAL mode) or
    /// postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "TOLLGATE_DATABASE_URL",
        default_value = "sqlite://tollgate.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// How long a write waits on a locked or unreachable database before the
    /// webhook answers 503 (so Stripe retries).
    #[arg(long, env = "TOLLGATE_DB_BUSY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub db_busy_timeout: Duration,

    /// Connections in each of two pools: HasAccess's reads, and everything
    /// else (on SQLite the other reads, beside its one writer; on
    /// PostgreSQL writes too, with up to three more per ledger writer: see
    /// --ledger-writers).
    #[arg(long, env = "TOLLGATE_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            url: self.database_url.clone(),
            busy_timeout: self.db_busy_timeout,
            max_connections: self.db_max_connections,
            writers: 1,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// PostgreSQL: how many writer tasks commit webhooks and API reads side
    /// by side, each in batches (group commit) on connections of its own
    /// (up to 3 each, added to the pool: one writing, two committing). A
    /// customer's writes always go to the same writer, in order. One
    /// writer makes the largest batches, which the bulk path writes
    /// fastest. Ignored on SQLite, which has one write lock: one writer.
    #[arg(long, env = "TOLLGATE_LEDGER_WRITERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub ledger_writers: u32,

    /// Address of the HTTP port (Stripe webhooks, health, readiness), as
    /// IP:PORT or HOST:PORT (resolved at start). Port 0 picks a free port;
    /// the bound address is logged.
    #[arg(long, env = "TOLLGATE_HTTP_ADDR", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub http_addr: SocketAddr,

    /// Address of the gRPC port (HasAccess, health, reflection), as IP:PORT
    /// or HOST:PORT. Port 0 picks a free port; the bound address is logged.
    #[arg(long, env = "TOLLGATE_GRPC_ADDR", default_value = "127.0.0.1:50051", value_parser = parse_addr)]
    pub grpc_addr: SocketAddr,

    /// Required. Webhook signing secret(s), whsec_..., comma-separated while
    /// rotating: a delivery is accepted if it matches any of them.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,

    /// How far a webhook's signed timestamp may be from now, either way
    /// (e.g. 300, 300s or 5m).
    #[arg(long, env = "TOLLGATE_SIGNATURE_TOLERANCE", default_value = "300", value_parser = parse_duration)]
    pub signature_tolerance: Duration,

    /// Metadata key (on checkout sessions, subscriptions and customers) that
    /// holds the product's user id when client_reference_id is not set.
    #[arg(long, env = "TOLLGATE_USER_ID_METADATA_KEY", default_value = "user_id")]
    pub user_id_metadata_key: String,

    /// How long a past_due subscription keeps access after it became
    /// past_due, e.g. 7d or 36h.
    #[arg(long, env = "TOLLGATE_PAST_DUE_GRACE", default_value = "7d", value_parser = parse_duration)]
    pub past_due_grace: Duration,

    /// Stripe API base URL; point it at a fake in tests.
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,

    /// Stripe secret or restricted key (read access to subscriptions and
    /// events). Without it, stale records get grace but are never refreshed.
    #[arg(long, env = "STRIPE_API_KEY", hide_env_values = true)]
    pub stripe_api_key: Option<String>,

    /// Which events are applied, by their livemode: live, test or any.
    /// Default: what STRIPE_API_KEY says (sk_live_/rk_live_ live,
    /// sk_test_/rk_test_ test), else any. Others are recorded as ignored.
    #[arg(long, env = "TOLLGATE_LIVEMODE", value_enum)]
    pub livemode: Option<Livemode>,

    /// Most Stripe API requests Tollgate sends in any second.
    #[arg(long, env = "TOLLGATE_STRIPE_MAX_RPS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub stripe_max_rps: u32,

    /// A record is stale when Tollgate has heard nothing from Stripe about
    /// it (webhook or API) for this long; a stale denial is re-checked with
    /// Stripe before it is given.
    #[arg(long, env = "TOLLGATE_STALE_AFTER", default_value = "15m", value_parser = parse_duration)]
    pub stale_after: Duration,

    /// Longest a HasAccess call waits for Stripe before answering from
    /// local data (with stale grace).
    #[arg(long, env = "TOLLGATE_REFRESH_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub refresh_timeout: Duration,

    /// When Stripe cannot be asked, access continues this long after local
    /// data says it ended (REASON_STALE_GRACE).
    #[arg(long, env = "TOLLGATE_STALE_GRACE", default_value = "24h", value_parser = parse_duration)]
    pub stale_grace: Duration,

    /// Memory the HasAccess cache may use for subjects' records (e.g.
    /// 512MiB, 1GiB); least recently used subjects are evicted beyond it.
    #[arg(long, env = "TOLLGATE_CACHE_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub cache_max_bytes: u64,

    /// Safety net: cached records are dropped after this long even without
    /// an invalidation.
    #[arg(long, env = "TOLLGATE_CACHE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// How often the reconciler lists Stripe events to apply missed
    /// webhooks (needs STRIPE_API_KEY). It also runs once at start.
    #[arg(long, env = "TOLLGATE_RECONCILE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// How often the reconciler re-reads every live subscription to correct
    /// drift (within TOLLGATE_STRIPE_MAX_RPS).
    #[arg(long, env = "TOLLGATE_SWEEP_INTERVAL", default_value = "24h", value_parser = parse_duration)]
    pub sweep_interval: Duration,

    /// Keep access on a revocation found only by the reconciler (no webhook)
    /// until an admin resolves its review (REASON_REVIEW_HOLD).
    #[arg(long, env = "TOLLGATE_HOLD_REVOCATIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub hold_revocations: bool,

    /// Where to POST access-change notifications (optional; they can also
    /// be pulled with Admin.ListNotifications).
    #[arg(long, env = "TOLLGATE_NOTIFY_URL")]
    pub notify_url: Option<String>,

    /// Secret that signs pushed notifications (Tollgate-Signature header,
    /// Stripe's scheme). Required with TOLLGATE_NOTIFY_URL.
    #[arg(long, env = "TOLLGATE_NOTIFY_SECRET", hide_env_values = true)]
    pub notify_secret: Option<String>,

    /// First retry delay of a failed push; doubles per attempt, capped at 10m.
    #[arg(long, env = "TOLLGATE_NOTIFY_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    pub notify_backoff: Duration,

    /// Push attempts before a notification is marked dead and flagged for review.
    #[arg(long, env = "TOLLGATE_NOTIFY_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    pub notify_max_attempts: u32,

    /// Bearer token for the gRPC Admin service; without it Admin is disabled.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Bearer token for the HTTP/JSON API (GET /v1/access, /v1/entitlements
    /// on the HTTP port, served only when this is set); gRPC Entitlements
    /// then needs it too.
    #[arg(long, env = "TOLLGATE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    #[command(flatten)]
    pub console: ConsoleArgs,

    /// A client on the HTTP port must send a request's headers within this
    /// long (also how long an idle kept-alive connection stays open).
    #[arg(long, env = "TOLLGATE_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// A webhook body must arrive within this long, at 1 KiB/s or faster
    /// after its first 5 seconds; slower clients get 408.
    #[arg(long, env = "TOLLGATE_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,

    /// Most open connections on the HTTP port; more wait in the accept queue.
    #[arg(long, env = "TOLLGATE_HTTP_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,

    /// Most open connections on the gRPC port; more wait in the accept queue.
    #[arg(long, env = "TOLLGATE_GRPC_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_connections: u32,

    /// Most concurrent calls (HTTP/2 streams) on one gRPC connection.
    #[arg(long, env = "TOLLGATE_GRPC_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_streams: u32,

    /// After SIGTERM, how long in-flight requests may take to finish before
    /// the connections still open are closed.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// The admin console's options (see [`crate::console`]); it is served only
/// when TOLLGATE_ADMIN_TOKEN is set.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Address of the admin console (HTML, for people), as IP:PORT or
    /// HOST:PORT; served only when TOLLGATE_ADMIN_TOKEN is set. Keep it off
    /// the internet, or behind a TLS proxy with access control.
    #[arg(long, env = "TOLLGATE_ADMIN_HTTP_ADDR", default_value = "127.0.0.1:8081", value_parser = parse_addr)]
    pub admin_http_addr: SocketAddr,

    /// A console session ends after this long without a request.
    #[arg(long, env = "TOLLGATE_ADMIN_SESSION_IDLE", default_value = "30m", value_parser = parse_duration)]
    pub admin_session_idle: Duration,

    /// Mark the console's session cookie Secure even when the request
    /// carries no `X-Forwarded-Proto: https` (set it behind a TLS proxy).
    #[arg(long, env = "TOLLGATE_ADMIN_SECURE_COOKIE", default_value_t = false, action = clap::ArgAction::Set)]
    pub admin_secure_cookie: bool,
}

/// The admin console's listener and sessions.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleOptions {
    pub addr: SocketAddr,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// Always mark the session cookie Secure.
    pub secure_cookie: bool,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            session_idle: Duration::from_secs(30 * 60),
            secure_cookie: false,
        }
    }
}

/// How many connections each port holds and how long a slow client may
/// keep one.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub http_header_timeout: Duration,
    pub http_body_timeout: Duration,
    pub http_max_connections: usize,
    pub grpc_max_connections: usize,
    pub grpc_max_streams: u32,
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_max_connections: 256,
            grpc_max_connections: 1024,
            grpc_max_streams: 256,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything `Application::build` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreOptions,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub secrets: Secrets,
    pub signature_tolerance_secs: u64,
    pub user_id_metadata_key: String,
    /// Events of the other mode are recorded as ignored.
    pub livemode: Livemode,
    pub policy: Policy,
    pub stripe: StripeOptions,
    pub staleness: Staleness,
    pub refresh_timeout: Duration,
    /// Ceiling of the HasAccess cache, in (approximate) bytes.
    pub cache_max_bytes: u64,
    pub cache_ttl: Duration,
    /// Whether `serve` runs the reconciler on a timer (Admin.Reconcile works
    /// either way).
    pub reconciler_enabled: bool,
    pub reconcile_interval: Duration,
    pub sweep_interval: Duration,
    pub hold_revocations: bool,
    pub push: Option<PushOptions>,
    pub admin_token: Option<String>,
    /// Serves the HTTP/JSON API and guards gRPC Entitlements when set.
    pub api_token: Option<String>,
    pub limits: ConnectionLimits,
    /// The admin console (bound only with an admin token).
    pub console: ConsoleOptions,
}

impl Config {
    /// One line for each setting that is probably a mistake, logged as a
    /// warning at start: the server runs anyway.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.secrets.all_look_like_stripe_secrets() {
            warnings.push("STRIPE_WEBHOOK_SECRET has a value that does not start with whsec_: Stripe's signing secrets do (is it the placeholder whsec_... or an API key?)".to_owned());
        }
        let key_mode = Livemode::of_key(self.stripe.api_key.as_deref());
        match (self.livemode, key_mode) {
            (Livemode::Any, None) => warnings.push("TOLLGATE_LIVEMODE is any (no STRIPE_API_KEY to tell): live and test events are both applied; set it to live or test".to_owned()),
            (Livemode::Any, Some(key)) => warnings.push(format!(
                "TOLLGATE_LIVEMODE is any: live and test events are both applied, while STRIPE_API_KEY reads only the {} world; set it to {}",
                key.as_str(),
                key.as_str()
            )),
            (mode, Some(key)) if mode != key => warnings.push(format!(
                "TOLLGATE_LIVEMODE is {} but STRIPE_API_KEY is a {} key: {} events are applied while refreshes and the reconciler read {} data",
                mode.as_str(),
                key.as_str(),
                mode.as_str(),
                key.as_str()
            )),
            _ => {}
        }
        if let Some(push) = &self.push {
            if let Some(host) = plain_http_host(&push.url) {
                warnings.push(format!(
                    "TOLLGATE_NOTIFY_URL sends notifications to {host} over plain http: user ids and access changes cross the network unencrypted; use https"
                ));
            }
        }
        warnings
    }
}

/// The host of an `http://` URL that does not stay on this machine.
fn plain_http_host(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "STRIPE_WEBHOOK_SECRET is not set: set it to your webhook endpoint's signing secret, \
         e.g. `export STRIPE_WEBHOOK_SECRET=whsec_...` (comma-separate several to rotate), \
         or pass --stripe-webhook-secret"
    )]
    MissingWebhookSecret,
    #[error("TOLLGATE_USER_ID_METADATA_KEY must not be empty")]
    EmptyMetadataKey,
    #[error("TOLLGATE_NOTIFY_URL is set but TOLLGATE_NOTIFY_SECRET is not: set a secret to sign notifications with")]
    MissingNotifySecret,
}

impl ServeArgs {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let secrets = self
            .stripe_webhook_secret
            .as_deref()
            .and_then(|s| Secrets::parse(s).ok())
            .ok_or(ConfigError::MissingWebhookSecret)?;
        if self.user_id_metadata_key.trim().is_empty() {
            return Err(ConfigError::EmptyMetadataKey);
        }
        let push = match self
            .notify_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            None => None,
            Some(url) => Some(PushOptions {
                url: url.to_owned(),
                secret: self
                    .notify_secret
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or(ConfigError::MissingNotifySecret)?,
                backoff: self.notify_backoff,
                max_attempts: self.notify_max_attempts,
            }),
        };
        Ok(Config {
            store: StoreOptions {
                writers: self.ledger_writers,
                ..self.database.store_options()
            },
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            secrets,
            signature_tolerance_secs: self.signature_tolerance.as_secs(),
            user_id_metadata_key: self.user_id_metadata_key.trim().to_owned(),
            livemode: self
                .livemode
                .or_else(|| Livemode::of_key(self.stripe_api_key.as_deref()))
                .unwrap_or(Livemode::Any),
            policy: Policy {
                past_due_grace: self.past_due_grace,
            },
            stripe: StripeOptions {
                base_url: self.stripe_api_base,
                api_key: self.stripe_api_key,
                max_rps: self.stripe_max_rps,
                request_timeout: Duration::from_secs(10),
                max_retries: 2,
            },
            staleness: Staleness {
                stale_after: self.stale_after,
                stale_grace: self.stale_grace,
            },
            refresh_timeout: self.refresh_timeout,
            cache_max_bytes: self.cache_max_bytes,
            cache_ttl: self.cache_ttl,
            reconciler_enabled: true,
            reconcile_interval: self.reconcile_interval,
            sweep_interval: self.sweep_interval,
            hold_revocations: self.hold_revocations,
            push,
            admin_token: self
                .admin_token
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
            api_token: self
                .api_token
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
            limits: ConnectionLimits {
                http_header_timeout: self.http_header_timeout,
                http_body_timeout: self.http_body_timeout,
                http_max_connections: self.http_max_connections as usize,
                grpc_max_connections: self.grpc_max_connections as usize,
                grpc_max_streams: self.grpc_max_streams,
                shutdown_timeout: self.shutdown_timeout,
            },
            console: ConsoleOptions {
                addr: self.console.admin_http_addr,
                session_idle: self.console.admin_session_idle,
                secure_cookie: self.console.admin_secure_cookie,
            },
        })
    }
}

/// Parses `IP:PORT` or `HOST:PORT`, resolving a host name now (the first
/// address it resolves to is used, and logged once bound).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if !s.contains(':') {
        return Err(format!(
            "`{s}` has no port (try e.g. 127.0.0.1:8080 or localhost:8080)"
        ));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{s}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// Parses sizes such as `1048576`, `512KiB`, `256MiB`, `1GiB` (or `MB`, `GB`
/// for the same powers of 1024: memory, not disk).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try e.g. 512MiB or 1GiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// The database URL without credentials, safe to log.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_days_hours_minutes_seconds() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            parse_duration("36h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_accept_bytes_and_binary_units() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64 kb").unwrap(), 64 << 10);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }

    #[test]
    fn durations_also_accept_bare_seconds() {
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    }

    #[test]
    fn addresses_accept_ips_and_host_names() {
        assert_eq!(
            parse_addr("127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(parse_addr("localhost:8081").unwrap().port(), 8081);
        assert!(parse_addr("[::1]:0").is_ok());
        assert!(parse_addr("localhost").unwrap_err().contains("no port"));
        assert!(parse_addr("no-such-host.invalid:80").is_err());
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redacted_url("postgres://u:pw@db/x"), "postgres://***@db/x");
        assert_eq!(redacted_url("sqlite://tollgate.db"), "sqlite://tollgate.db");
    }

    #[test]
    fn livemode_follows_the_api_key_unless_set() {
        let mode = |extra: &[&str]| {
            let mut argv = vec!["tollgate", "serve", "--stripe-webhook-secret", "whsec_x"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Serve(args) => args.into_config().unwrap().livemode,
                _ => unreachable!(),
            }
        };
        assert_eq!(mode(&["--stripe-api-key", "sk_live_x"]), Livemode::Live);
        assert_eq!(mode(&["--stripe-api-key", "rk_test_x"]), Livemode::Test);
        assert_eq!(mode(&[]), Livemode::Any);
        let set = ["--stripe-api-key", "sk_live_x", "--livemode", "test"];
        assert_eq!(mode(&set), Livemode::Test);
    }

    #[test]
    fn likely_mistakes_are_warned_about_one_line_each() {
        let config = |extra: &[&str]| {
            let mut argv = vec!["tollgate", "serve"];
            if !extra.contains(&"--stripe-webhook-secret") {
                argv.extend(["--stripe-webhook-secret", "whsec_x"]);
            }
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Serve(args) => args.into_config().unwrap(),
                _ => unreachable!(),
            }
        };
        let warned = |extra: &[&str], needle: &str| {
            let warnings = config(extra).warnings();
            warnings
                .iter()
                .any(|w| w.contains(needle) && !w.contains('\n'))
        };
        let quiet = |extra: &[&str]| config(extra).warnings();

        assert!(warned(
            &["--stripe-webhook-secret", "whsec_..."],
            "does not start with whsec_"
        ));
        assert!(warned(&[], "no STRIPE_API_KEY to tell"));
        let live_key_test_mode = ["--stripe-api-key", "sk_live_x", "--livemode", "test"];
        assert!(warned(
            &live_key_test_mode,
            "TOLLGATE_LIVEMODE is test but STRIPE_API_KEY is a live key"
        ));
        assert!(warned(
            &["--stripe-api-key", "rk_test_x", "--livemode", "any"],
            "set it to test"
        ));
        let http = [
            "--notify-url",
            "http://app.internal/hook",
            "--notify-secret",
            "s",
        ];
        assert!(warned(&http, "to app.internal over plain http"));

        assert_eq!(
            quiet(&["--stripe-api-key", "sk_live_x"]),
            Vec::<String>::new()
        );
        for url in [
            "https://app.internal/hook",
            "http://127.0.0.1:9/h",
            "http://localhost/h",
            "http://[::1]:9/h",
        ] {
            let args = [
                "--stripe-api-key",
                "sk_test_x",
                "--notify-url",
                url,
                "--notify-secret",
                "s",
            ];
            assert_eq!(quiet(&args), Vec::<String>::new(), "{url}");
        }
    }

    #[test]
    fn console_options_default_to_loopback_and_half_an_hour() {
        let console = |extra: &[&str]| {
            let mut argv = vec!["tollgate", "serve", "--stripe-webhook-secret", "whsec_x"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Serve(args) => args.into_config().unwrap().console,
                _ => unreachable!(),
            }
        };
        let default = console(&[]);
        assert_eq!(default.addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(default.session_idle, Duration::from_secs(1800));
        assert!(!default.secure_cookie);
        let set = console(&[
            "--admin-session-idle",
            "5m",
            "--admin-secure-cookie",
            "true",
        ]);
        assert_eq!(set.session_idle, Duration::from_secs(300));
        assert!(set.secure_cookie);
    }

    #[test]
    fn ledger_writers_default_to_one_and_reach_the_store() {
        let argv = |extra: &[&'static str]| {
            let mut argv = vec!["tollgate", "serve", "--stripe-webhook-secret", "whsec_x"];
            argv.extend_from_slice(extra);
            argv
        };
        let writers =
            |extra: &[&'static str]| match Cli::try_parse_from(argv(extra)).unwrap().command {
                Command::Serve(args) => args.into_config().unwrap().store.writers,
                _ => unreachable!(),
            };
        assert_eq!(writers(&[]), 1);
        assert_eq!(writers(&["--ledger-writers", "2"]), 2);
        assert!(Cli::try_parse_from(argv(&["--ledger-writers", "0"])).is_err());
        assert!(Cli::try_parse_from(argv(&["--ledger-writers", "65"])).is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
