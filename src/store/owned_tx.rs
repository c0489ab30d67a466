//! The transaction both backends' `Tx` types wrap: a leased connection it
//! owns, driven with plain statements.

use std::borrow::Cow;

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
    begin: Begin,
}

/// Where a transaction's `BEGIN` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Begin {
    /// Sent, and it began.
    Done,
    /// Not sent yet: it goes in one string with the transaction's first
    /// statement. Each statement is a hand-off to SQLite's connection
    /// thread and back; a lone webhook's transaction has a few.
    Pending(&'static str),
    /// Sent in front of a statement whose answer has not been settled.
    InFlight,
    /// Sent in front of a statement that failed: whether the transaction
    /// began is not known. Nothing more runs on the connection; it is
    /// closed at the end, which rolls back whatever did begin.
    Unknown,
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
            begin: Begin::Done,
        })
    }

    /// Leases a connection from `pool` and sends `begin` with the
    /// transaction's first statement: in front of it where the caller
    /// asks for it ([`OwnedTx::with_begin`]), alone before it otherwise
    /// ([`OwnedTx::begun`]). A transaction that ends before any statement
    /// sends nothing.
    pub(crate) async fn begin_with_first_statement(
        pool: &LeasePool<DB>,
        begin: &'static str,
    ) -> Result<Self, StoreError> {
        Ok(OwnedTx {
            lease: Some(pool.lease(true).await?),
            broken: false,
            begin: Begin::Pending(begin),
        })
    }

    /// The connection, for the statements of a transaction begun with
    /// [`OwnedTx::begin`].
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        debug_assert_eq!(self.begin, Begin::Done, "BUG: a statement before BEGIN");
        self.lease
            .as_mut()
            .expect("BUG: transaction used after its end")
            .conn()
    }

    /// The connection, with the transaction's `BEGIN` sent first if it
    /// has not been.
    pub(crate) async fn begun(&mut self) -> Result<&mut DB::Connection, StoreError> {
        match self.begin {
            Begin::Done => {}
            Begin::Pending(begin) => {
                // In flight before the await: a drop mid-way must not give
                // the connection back with a transaction maybe begun.
                self.begin = Begin::InFlight;
                let sent = self.lease_conn().execute(begin).await;
                self.settle(sent)?;
            }
            Begin::InFlight | Begin::Unknown => return Err(begin_unknown()),
        }
        Ok(self.lease_conn())
    }

    /// `sql` with the pending `BEGIN` in front of it (one string), when
    /// the transaction has not begun; pass the statement's result through
    /// [`OwnedTx::settle`]. Only for a statement that may run first: one
    /// string of two statements has one answer, so a failure leaves the
    /// transaction's state unknown, and the connection is closed.
    pub(crate) fn with_begin<'s>(&mut self, sql: &'s str) -> Result<Cow<'s, str>, StoreError> {
        match self.begin {
            Begin::Done => Ok(Cow::Borrowed(sql)),
            Begin::Pending(begin) => {
                self.begin = Begin::InFlight;
                Ok(Cow::Owned(format!("{begin}; {sql}")))
            }
            Begin::InFlight | Begin::Unknown => Err(begin_unknown()),
        }
    }

    /// The connection, for the statement [`OwnedTx::with_begin`] made.
    pub(crate) fn begun_or_beginning(&mut self) -> &mut DB::Connection {
        debug_assert!(
            matches!(self.begin, Begin::Done | Begin::InFlight),
            "BUG: a statement before BEGIN"
        );
        self.lease_conn()
    }

    /// The result of a statement sent after [`OwnedTx::with_begin`].
    pub(crate) fn settle<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        if self.begin == Begin::InFlight {
            self.begin = if result.is_ok() {
                Begin::Done
            } else {
                Begin::Unknown
            };
        }
        Ok(result?)
    }

    fn lease_conn(&mut self) -> &mut DB::Connection {
        self.lease
            .as_mut()
            .expect("BUG: transaction used after its end")
            .conn()
    }

    /// `SAVEPOINT event`: the same statement on both backends (with the
    /// pending `BEGIN` in front of it, when the first).
    pub(crate) async fn savepoint(&mut self) -> Result<(), StoreError> {
        let sql = self.with_begin("SAVEPOINT event")?;
        let sent = self.lease_conn().execute(&*sql).await;
        self.settle(sent)?;
        Ok(())
    }

    /// `ROLLBACK TO SAVEPOINT event`. When it fails the transaction is
    /// gone (SQLite may already have rolled it all back after a full disk
    /// or an I/O error): the connection is closed at the end rather than
    /// reused.
    pub(crate) async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        let conn = self.begun().await?;
        match conn.execute("ROLLBACK TO SAVEPOINT event").await {
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

    /// Ends the transaction with a string of the caller's that ends in
    /// `COMMIT` (statements whose answer is wanted, then the commit, in
    /// one hand-off): run it on [`Ending::conn`], then pass its result to
    /// [`Ending::ended`], which treats the connection as
    /// [`OwnedTx::commit`] does.
    pub(crate) async fn ending(mut self) -> Result<Ending<DB>, StoreError> {
        self.begun().await?;
        Ok(Ending {
            lease: self.lease.take().expect("BUG: transaction ended twice"),
            broken: self.broken,
        })
    }

    /// Sends `COMMIT` or `ROLLBACK`; on any error the connection is closed
    /// rather than reused. A transaction never begun sends nothing; one
    /// whose begin is unknown is closed (which rolls back) and never
    /// committed.
    async fn end(&mut self, statement: &'static str) -> Result<(), StoreError> {
        let mut lease = self.lease.take().expect("BUG: transaction ended twice");
        match (self.begin, statement) {
            (Begin::Pending(_), _) => {
                lease.give_back();
                return Ok(());
            }
            (Begin::InFlight | Begin::Unknown, "ROLLBACK") => return Ok(()),
            (Begin::InFlight | Begin::Unknown, _) => return Err(begin_unknown()),
            (Begin::Done, _) => {}
        }
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

/// A statement on a transaction whose `BEGIN` went with a statement that
/// failed: whether it began is unknown, so nothing more runs on it.
fn begin_unknown() -> StoreError {
    StoreError::Bug(sqlx::Error::Protocol(
        "BUG: a statement on a transaction whose begin failed".into(),
    ))
}

/// A transaction being ended by a string of the caller's.
pub(crate) struct Ending<DB: Database> {
    lease: Lease<DB>,
    broken: bool,
}

impl<DB: Database> Ending<DB> {
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        self.lease.conn()
    }

    /// The string's result; on any error the connection is closed, which
    /// rolls back what did not commit.
    pub(crate) fn ended<T>(self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        match result {
            Ok(done) => {
                if !self.broken {
                    self.lease.give_back();
                }
                Ok(done)
            }
            Err(e) => {
                tracing::warn!(error = %e, "transaction end failed; closing the connection");
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::Sqlite;

    use super::*;

    async fn pool(dir: &tempfile::TempDir) -> LeasePool<Sqlite> {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = LeasePool::new(options, 1, Duration::from_secs(5));
        let mut tx: OwnedTx<Sqlite> = OwnedTx::begin(&pool, "BEGIN IMMEDIATE").await.unwrap();
        tx.conn()
            .execute("CREATE TABLE t (v INTEGER)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        pool
    }

    async fn lazy(pool: &LeasePool<Sqlite>) -> OwnedTx<Sqlite> {
        OwnedTx::begin_with_first_statement(pool, "BEGIN IMMEDIATE")
            .await
            .unwrap()
    }

    /// `sql` as the statement that may come first.
    async fn first(tx: &mut OwnedTx<Sqlite>, sql: &str) -> Result<(), StoreError> {
        let sql = tx.with_begin(sql)?;
        let sent = tx.begun_or_beginning().execute(&*sql).await;
        tx.settle(sent).map(|_| ())
    }

    async fn insert(tx: &mut OwnedTx<Sqlite>, v: i64) {
        let conn = tx.begun().await.unwrap();
        sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(v)
            .execute(conn)
            .await
            .unwrap();
    }

    async fn count(pool: &LeasePool<Sqlite>) -> i64 {
        let rows: Vec<(i64,)> = pool
            .fetch_all("SELECT count(*) FROM t", |q| q)
            .await
            .unwrap();
        rows[0].0
    }

    #[tokio::test]
    async fn a_begin_sent_with_the_first_statement_holds_it_in_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let mut tx = lazy(&pool).await;
        assert_eq!(
            tx.with_begin("SELECT 1").unwrap(),
            "BEGIN IMMEDIATE; SELECT 1"
        );
        drop(tx);
        let mut tx = lazy(&pool).await;
        first(&mut tx, "INSERT INTO t VALUES (1)").await.unwrap();
        // Begun: the next statements go alone, and a rollback undoes all.
        assert_eq!(tx.with_begin("X").unwrap(), "X");
        insert(&mut tx, 2).await;
        tx.rollback().await.unwrap();
        assert_eq!(count(&pool).await, 0);
    }

    #[tokio::test]
    async fn a_transaction_never_begun_ends_without_sending_anything() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let tx = lazy(&pool).await;
        tx.commit().await.unwrap();
        let tx = lazy(&pool).await;
        tx.rollback().await.unwrap();
        // A savepoint first begins it too.
        let mut tx = lazy(&pool).await;
        tx.savepoint().await.unwrap();
        insert(&mut tx, 1).await;
        tx.rollback_to_savepoint().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&pool).await, 0);
    }

    /// The string failed: whether BEGIN ran is unknown, so nothing more
    /// runs on it, it never commits, and the pool goes on with a fresh
    /// connection.
    #[tokio::test]
    async fn a_failed_first_statement_leaves_a_transaction_that_runs_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let mut tx = lazy(&pool).await;
        assert!(first(&mut tx, "INSERT INTO missing VALUES (1)")
            .await
            .is_err());
        assert!(matches!(tx.begun().await, Err(StoreError::Bug(_))));
        assert!(tx.with_begin("SELECT 1").is_err());
        assert!(matches!(tx.commit().await, Err(StoreError::Bug(_))));

        let mut tx = lazy(&pool).await;
        assert!(first(&mut tx, "INSERT INTO missing VALUES (1)")
            .await
            .is_err());
        tx.rollback().await.unwrap();

        // The write lock was let go with the closed connection.
        let mut tx = lazy(&pool).await;
        insert(&mut tx, 1).await;
        tx.commit().await.unwrap();
        assert_eq!(count(&pool).await, 1);
    }
}
