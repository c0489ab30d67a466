//! PostgreSQL: the shared store for several replicas.
//!
//! Every guarantee holds across replicas sharing one database:
//! - row locks (`FOR UPDATE`) serialize writers per subscription, so the
//!   ordering watermark is compared and updated in one transaction;
//! - the unique key on the event id makes the loser of a duplicate race see
//!   a duplicate rather than an error;
//! - every commit that changes subjects sends `pg_notify` on
//!   [`INVALIDATION_CHANNEL`] (delivered only if it commits), and every
//!   replica evicts them; a replica whose listener connection drops stops
//!   caching until it listens again;
//! - one replica holds a session advisory lock and runs the reconciler;
//!   when it dies its session ends and another takes over at its next tick;
//! - notification pushes claim rows with `FOR UPDATE SKIP LOCKED` and a
//!   lease, so two replicas never send the same attempt.
//!
//! [`Store`](super::Store) is implemented in `postgres/store.rs`,
//! [`Tx`](super::Tx) in `postgres/tx.rs`.

mod store;
mod tx;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use super::lease_pool::LeasePool;
use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long the first connection at start may take before the start fails.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The channel commits publish changed subjects on.
pub const INVALIDATION_CHANNEL: &str = "tollgate_invalidate";

/// Advisory lock key of the reconciler: "tollgate" as a big-endian integer.
const RECONCILER_LOCK: i64 = 8_390_043_843_661_231_205;

pub struct PgStore {
    /// Single statements (writes, the reconciler's and the console's
    /// reads): half of `max_connections`, and the listener's connection.
    pool: PgPool,
    /// Write transactions (see [`LeasePool`]): the other half, and
    /// [`super::CONNECTIONS_PER_WRITER`] for each ledger writer on top.
    transactions: LeasePool<sqlx::Postgres>,
    /// HasAccess's reads (see [`LeasePool`]).
    reads: LeasePool<sqlx::Postgres>,
    connect: PgConnectOptions,
    /// The session that holds the reconciler lock, while this replica leads.
    leader: tokio::sync::Mutex<Option<PgConnection>>,
    /// Ledger writers; the pool has a connection for each on top of
    /// `max_connections`.
    writers: usize,
}

impl PgStore {
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|_| StoreError::UnsupportedUrl("invalid postgres url".to_owned()))?
            .application_name("tollgate")
            // A write that waits on a lock longer than this fails, so the
            // webhook answers 503 instead of holding Stripe's request open.
            .options([
                (
                    "lock_timeout",
                    format!("{}ms", options.busy_timeout.as_millis()),
                ),
                // Every statement is prepared once per connection and
                // looks rows up by key: the generic plan is the right one,
                // and re-planning each execution of the multi-row
                // statements (dozens of array parameters) cost more than
                // running them (about 20% of ingest at one webhook at a
                // time, measured).
                ("plan_cache_mode", "force_generic_plan".to_owned()),
            ]);
        // Connect once directly: the pool would retry a refused connection
        // until its timeout and then say only "pool timed out".
        let target = describe(&connect);
        let opened =
            tokio::time::timeout(FIRST_CONNECT_TIMEOUT, PgConnection::connect_with(&connect))
                .await
                .map_err(|_| StoreError::OpenTimeout {
                    target: target.clone(),
                    waited: FIRST_CONNECT_TIMEOUT,
                    hint: format!(
                        "is {} the right host and port, and does a firewall let it through?",
                        host_port(&connect)
                    ),
                })?
                .map_err(|e| open_error(&connect, target, e))?;
        let _ = opened.close().await;
        // Each ledger writer holds a connection for its batch's whole
        // transaction, and more for the batches still committing: the
        // transactions' pool has those on top of the others, so busy
        // writers never starve reads (or each other). `max_connections`
        // is shared between single statements and other transactions.
        let writers = options.writers.max(1);
        let writing = writers.saturating_mul(super::CONNECTIONS_PER_WRITER);
        let others = options.max_connections.max(2);
        let acquire_timeout = options.busy_timeout.max(Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            // The listener's connection on top.
            .max_connections(others - others / 2 + 1)
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        let transactions = LeasePool::new(
            connect.clone(),
            (others / 2).saturating_add(writing),
            acquire_timeout,
        );
        let reads = LeasePool::new(connect.clone(), others, acquire_timeout);
        Ok(PgStore {
            pool,
            transactions,
            reads,
            connect,
            leader: tokio::sync::Mutex::new(None),
            writers: writers as usize,
        })
    }
}

/// `host:port`, or the Unix socket, that `connect` points at.
fn host_port(connect: &PgConnectOptions) -> String {
    match connect.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", connect.get_host(), connect.get_port()),
    }
}

/// What a connection tries, never with its password.
fn describe(connect: &PgConnectOptions) -> String {
    format!(
        "PostgreSQL at {}, database {}, user {}",
        host_port(connect),
        connect.get_database().unwrap_or(connect.get_username()),
        connect.get_username()
    )
}

/// Why the first connection failed, with the fix when it is obvious.
fn open_error(connect: &PgConnectOptions, target: String, error: sqlx::Error) -> StoreError {
    let at = host_port(connect);
    let user = connect.get_username();
    let database = connect.get_database().unwrap_or(user);
    let code = match &error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let hint = match (&error, code.as_deref()) {
        (sqlx::Error::Io(e), _) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some(format!("is PostgreSQL running on {at}?"))
        }
        (sqlx::Error::Io(_), _) => Some(format!("is {at} right and reachable from here?")),
        // invalid_catalog_name
        (_, Some("3D000")) => Some(format!(
            "create it: createdb -h {} -p {} -U {user} {database}",
            connect.get_host(),
            connect.get_port()
        )),
        // invalid_password, invalid_authorization_specification
        (_, Some("28P01")) => {
            Some("check the user and password in TOLLGATE_DATABASE_URL".to_owned())
        }
        (_, Some("28000")) => Some(format!(
            "does pg_hba.conf let user {user} connect to {database} from this host?"
        )),
        _ => None,
    };
    StoreError::Open {
        target,
        error,
        hint,
    }
}

/// `$1` product ids: the known feature maps among them (lookup keys as
/// JSON).
const PRODUCT_FEATURES: &str =
    "SELECT product_id, features FROM product_features WHERE features IS NOT NULL AND product_id = ANY($1)";
