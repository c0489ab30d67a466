//! The lease pools: connections lent one statement or one transaction at a
//! time, apart from sqlx's `Pool`. HasAccess's reads (a subject's
//! subscriptions, product maps, entitlement summaries) use one on either
//! backend, and write transactions another: the single writer connection
//! on SQLite (its single statements too), the ledger writers' and other
//! transactions on PostgreSQL.
//!
//! Not a sqlx `Pool`: sqlx tests every connection as it goes back to its
//! pool (on PostgreSQL a Sync and a wait for ReadyForQuery; on SQLite a
//! round trip to the connection's worker thread). That is a second round
//! trip for every one-statement read, which a profile of cold reads showed
//! as half of their `sendto` calls on PostgreSQL, and one more for every
//! write transaction, which the next one waits for (one in six round trips
//! of a lone webhook). Here a connection goes back only after its
//! statement ran to completion, or its transaction ended, so it is known to
//! be idle; one whose statement was cut short (an error, a caller that went
//! away) is closed instead, never reused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::query::QueryAs;
use sqlx::{ConnectOptions, Connection, Database, Executor, FromRow, IntoArguments};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::StoreError;

/// A connection older than this is closed when it comes back, so server
/// memory a long-lived session gathers is given back now and then (sqlx's
/// own default lifetime).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

pub(crate) struct LeasePool<DB: Database> {
    shared: Arc<Shared<DB>>,
}

struct Shared<DB: Database> {
    connect: <DB::Connection as Connection>::Options,
    /// Idle connections, each with the time it was opened.
    idle: Mutex<Vec<(DB::Connection, Instant)>>,
    /// One per connection open or being opened: bounds them.
    permits: Arc<Semaphore>,
    /// Longest a caller waits for a connection (or for a new one to open).
    acquire_timeout: Duration,
}

/// A statement whose rows are read as `O`.
pub(crate) type Statement<'q, DB, O> = QueryAs<'q, DB, O, <DB as Database>::Arguments<'q>>;

/// A connection lent to one statement or one transaction. Dropped without
/// [`Lease::give_back`], its connection is closed rather than reused.
pub(crate) struct Lease<DB: Database> {
    pool: Arc<Shared<DB>>,
    conn: Option<(DB::Connection, Instant)>,
    /// Taken from the idle list rather than opened for this lease: the
    /// server may have closed it meanwhile.
    reused: bool,
    _permit: OwnedSemaphorePermit,
}

impl<DB: Database> LeasePool<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub(crate) fn new(
        connect: <DB::Connection as Connection>::Options,
        size: u32,
        acquire_timeout: Duration,
    ) -> Self {
        LeasePool {
            shared: Arc::new(Shared {
                connect,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size.max(1) as usize)),
                acquire_timeout,
            }),
        }
    }

    /// Every row of `sql` with the values `bind` adds. A reused
    /// connection the server closed while it sat idle is replaced once,
    /// for a fresh one.
    pub(crate) async fn fetch_all<'q, O, B>(
        &self,
        sql: &'q str,
        bind: B,
    ) -> Result<Vec<O>, StoreError>
    where
        O: Send + Unpin + for<'r> FromRow<'r, DB::Row>,
        B: Fn(Statement<'q, DB, O>) -> Statement<'q, DB, O>,
        DB::Arguments<'q>: IntoArguments<'q, DB>,
    {
        let mut lease = self.lease(true).await?;
        match bind(sqlx::query_as(sql)).fetch_all(lease.conn()).await {
            Ok(rows) => {
                lease.give_back();
                Ok(rows)
            }
            Err(e) if lease.reused && connection_lost(&e) => {
                drop(lease);
                let mut lease = self.lease(false).await?;
                let rows = bind(sqlx::query_as(sql)).fetch_all(lease.conn()).await?;
                lease.give_back();
                Ok(rows)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A connection with `statement` (`BEGIN`, `BEGIN IMMEDIATE`) run on
    /// it. A reused connection the server closed while it sat idle is
    /// replaced once: nothing was begun on it.
    pub(crate) async fn begin(&self, statement: &'static str) -> Result<Lease<DB>, StoreError> {
        let mut lease = self.lease(true).await?;
        match lease.conn().execute(statement).await {
            Ok(_) => Ok(lease),
            Err(e) if lease.reused && connection_lost(&e) => {
                drop(lease);
                let mut lease = self.lease(false).await?;
                lease.conn().execute(statement).await?;
                Ok(lease)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A connection for the caller's statements, idle or newly opened,
    /// within the pool's acquire timeout. Give it back with
    /// [`Lease::finish`] (or [`Lease::give_back`]) once they ran to
    /// completion.
    pub(crate) async fn lease(&self, reuse: bool) -> Result<Lease<DB>, StoreError> {
        let shared = &self.shared;
        let timed_out = |_| StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        // One bound for the wait for a permit and the connect together.
        let deadline = tokio::time::Instant::now() + shared.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, shared.permits.clone().acquire_owned())
            .await
            .map_err(timed_out)?
            .expect("BUG: a lease pool's semaphore is never closed");
        let idle = if reuse {
            shared.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
        } else {
            None
        };
        let (conn, reused) = match idle {
            Some(conn) => (conn, true),
            None => {
                let conn = tokio::time::timeout_at(deadline, shared.connect.connect())
                    .await
                    .map_err(timed_out)??;
                ((conn, Instant::now()), false)
            }
        };
        Ok(Lease {
            pool: shared.clone(),
            conn: Some(conn),
            reused,
            _permit: permit,
        })
    }
}

/// Whether `e` says the connection itself is gone (rather than that the
/// statement failed on a working connection): its socket closed, or the
/// server said why it ended the session (operator intervention, class
/// 57P: an administrator's `pg_terminate_backend`, a shutdown, a restart;
/// connection exception, class 08). SQLite's connections are in-process:
/// only an I/O error can end one.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        _ => false,
    }
}

impl<DB: Database> Lease<DB> {
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        &mut self
            .conn
            .as_mut()
            .expect("BUG: a lease holds its connection")
            .0
    }

    /// Puts the connection back for the next caller: only after its
    /// statements ran to completion, so nothing of them is left on the
    /// wire (and, for a transaction, after it ended).
    pub(crate) fn give_back(mut self) {
        if let Some((conn, opened)) = self.conn.take() {
            if opened.elapsed() < MAX_LIFETIME {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.push((conn, opened));
            } else {
                close(conn);
            }
        }
    }

    /// Ends a lease lent for one statement: its connection goes back when
    /// the statement succeeded, and is closed when it failed.
    pub(crate) fn finish<T>(self, done: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        if done.is_ok() {
            self.give_back();
        }
        Ok(done?)
    }
}

impl<DB: Database> Drop for Lease<DB> {
    /// Not given back: its statement may be half read, its transaction
    /// open. Closed (which rolls that back), not reused.
    fn drop(&mut self) {
        if let Some((conn, _)) = self.conn.take() {
            close(conn);
        }
    }
}

/// Says goodbye to the server in the background (a dropped connection
/// would only close its socket, which the server logs as unexpected).
fn close<C: Connection + 'static>(conn: C) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = conn.close().await;
        });
    }
}
