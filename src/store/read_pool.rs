//! The read pool: connections kept for HasAccess's reads (a subject's
//! subscriptions, product maps, entitlement summaries), apart from the pool
//! the writers, the reconciler and the console use, on either backend.
//!
//! Apart, so a read never queues behind writes for a connection. And not a
//! second sqlx `Pool`: sqlx tests every connection as it goes back to its
//! pool (on PostgreSQL a Sync and a wait for ReadyForQuery; on SQLite a
//! round trip to the connection's worker thread), a second round trip for
//! every one-statement read, which a profile of cold reads showed as half
//! of their `sendto` calls on PostgreSQL. Here a connection goes back only
//! after its statement ran to completion, so it is known to be idle; one
//! whose statement was cut short (an error, a caller that went away) is
//! closed instead, never reused.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::query::QueryAs;
use sqlx::{ConnectOptions, Connection, Database, Executor, FromRow, IntoArguments};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::store::StoreError;

/// A connection older than this is closed when it comes back, so server
/// memory a long-lived session gathers is given back now and then (sqlx's
/// own default lifetime).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

pub(crate) struct ReadPool<DB: Database> {
    connect: <DB::Connection as Connection>::Options,
    /// Idle connections, each with the time it was opened.
    idle: Mutex<Vec<(DB::Connection, Instant)>>,
    /// One per connection open or being opened: bounds them.
    permits: Semaphore,
    /// Longest a read waits for a connection (or for a new one to open).
    acquire_timeout: Duration,
}

/// A statement whose rows are read as `O`.
pub(crate) type Statement<'q, DB, O> = QueryAs<'q, DB, O, <DB as Database>::Arguments<'q>>;

/// A connection lent to one read.
struct Lease<'p, DB: Database> {
    pool: &'p ReadPool<DB>,
    conn: Option<(DB::Connection, Instant)>,
    /// Taken from the idle list rather than opened for this read: the
    /// server may have closed it meanwhile.
    reused: bool,
    _permit: SemaphorePermit<'p>,
}

impl<DB: Database> ReadPool<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub(crate) fn new(
        connect: <DB::Connection as Connection>::Options,
        size: u32,
        acquire_timeout: Duration,
    ) -> Self {
        ReadPool {
            connect,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1) as usize),
            acquire_timeout,
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

    async fn lease(&self, reuse: bool) -> Result<Lease<'_, DB>, StoreError> {
        let timed_out = |_| StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        // One bound for the wait for a permit and the connect together.
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(timed_out)?
            .expect("BUG: the read pool's semaphore is never closed");
        let idle = if reuse {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
        } else {
            None
        };
        let (conn, reused) = match idle {
            Some(conn) => (conn, true),
            None => {
                let conn = tokio::time::timeout_at(deadline, self.connect.connect())
                    .await
                    .map_err(timed_out)??;
                ((conn, Instant::now()), false)
            }
        };
        Ok(Lease {
            pool: self,
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

impl<DB: Database> Lease<'_, DB> {
    fn conn(&mut self) -> &mut DB::Connection {
        &mut self
            .conn
            .as_mut()
            .expect("BUG: a lease holds its connection")
            .0
    }

    /// Puts the connection back for the next read: only after a statement
    /// ran to completion, so nothing of it is left on the wire.
    fn give_back(mut self) {
        if let Some((conn, opened)) = self.conn.take() {
            if opened.elapsed() < MAX_LIFETIME {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.push((conn, opened));
            } else {
                close(conn);
            }
        }
    }
}

impl<DB: Database> Drop for Lease<'_, DB> {
    /// Not given back: its statement may be half read. Closed, not reused.
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
