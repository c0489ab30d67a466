//! The transaction both backends' `Tx` types wrap: a leased connection it
//! owns, driven with plain statements.

use sqlx::{Database, Executor};

use super::lease_pool::{Lease, LeasePool};
use super::StoreError;

/// An open write transaction on a connection it owns.
///
/// The transaction is driven with plain `BEGIN`/`COMMIT`/`ROLLBACK` rather
/// than `sqlx::Transaction`: when SQLite fails a COMMIT (disk full, I/O
/// error) it rolls back by itself, sqlx's own bookkeeping then believes a
/// transaction is still open, and every later `begin` on that connection
/// became a SAVEPOINT inside a transaction that never commits. Here any
/// error on BEGIN, COMMIT or ROLLBACK (or ROLLBACK TO SAVEPOINT), and any
/// drop before the end (an error `?` or a cancelled request), closes the
/// connection instead of giving it back; closing rolls back whatever was
/// open, and the pool opens a fresh one.
pub(crate) struct OwnedTx<DB: Database> {
    /// `None` once the transaction has ended.
    lease: Option<Lease<DB>>,
    /// A `ROLLBACK TO SAVEPOINT` failed: the transaction may be gone
    /// already, so the connection is closed at the end rather than reused.
    broken: bool,
}

impl<DB: Database> OwnedTx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Leases a connection from `pool` and sends `begin` (`BEGIN`, or
    /// SQLite's `BEGIN IMMEDIATE`) on it.
    pub(crate) async fn begin(
        pool: &LeasePool<DB>,
        begin: &'static str,
    ) -> Result<Self, StoreError> {
        Ok(OwnedTx {
            lease: Some(pool.begin(begin).await?),
            broken: false,
        })
    }

    /// The connection, for the statements of the transaction.
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        self.lease
            .as_mut()
            .expect("BUG: transaction used after its end")
            .conn()
    }

    /// `SAVEPOINT event`: the same statement on both backends.
    pub(crate) async fn savepoint(&mut self) -> Result<(), StoreError> {
        self.conn().execute("SAVEPOINT event").await?;
        Ok(())
    }

    /// `ROLLBACK TO SAVEPOINT event`. When it fails the transaction is
    /// gone (SQLite may already have rolled it all back after a full disk
    /// or an I/O error): the connection is closed at the end rather than
    /// reused.
    pub(crate) async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        match self.conn().execute("ROLLBACK TO SAVEPOINT event").await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.broken = true;
                Err(e.into())
            }
        }
    }

    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        self.end("COMMIT").await
    }

    pub(crate) async fn rollback(mut self) -> Result<(), StoreError> {
        self.end("ROLLBACK").await
    }

    /// Sends `COMMIT` or `ROLLBACK`; on any error the connection is closed
    /// rather than reused.
    async fn end(&mut self, statement: &'static str) -> Result<(), StoreError> {
        let mut lease = self.lease.take().expect("BUG: transaction ended twice");
        match lease.conn().execute(statement).await {
            Ok(_) if !self.broken => {
                lease.give_back();
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, statement, "transaction end failed; closing the connection");
                Err(e.into())
            }
        }
    }
}
