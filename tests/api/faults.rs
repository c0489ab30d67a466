//! Faults below the application: a disk that fills up under SQLite, a
//! PostgreSQL connection killed mid-transaction. Whatever fails, nothing is
//! acknowledged that is not committed, and writes work again once the
//! fault is gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, Executor};

use crate::helpers::{
    backend_ready, now, spawn_app_in, spawn_app_with, Backend, TestApp, TestDatabase,
};
use crate::stripe::{subscription_event, Shape, Sub};

/// Whether fault tests that need root (mounting a tmpfs) must run rather
/// than be skipped; `.ci/run` sets it.
fn faults_required() -> bool {
    std::env::var("TOLLGATE_REQUIRE_FAULTS").is_ok_and(|v| v == "1" || v == "true")
}

/// A small tmpfs mounted for one test, so the disk can really fill up.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying so) when it can't be mounted and fault tests
    /// may be skipped.
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            return Some(Tmpfs { dir });
        }
        assert!(
            !faults_required(),
            "TOLLGATE_REQUIRE_FAULTS is set but a tmpfs could not be mounted (needs root)"
        );
        eprintln!("SKIPPED disk-full test: mounting a tmpfs needs root");
        None
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem refuses another byte.
    pub(crate) fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler file");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = app
        .http
        .get(format!("http://{}/readyz", app.http_addr))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn event(id: &str, created: i64, status: &'static str) -> Value {
    let sub = Sub::new("sub_full", "cus_full", status, now() + 30 * 86_400);
    subscription_event(
        id,
        "customer.subscription.updated",
        created,
        &sub,
        Shape::Basil,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_after_a_full_disk_fails_a_commit_nothing_unstored_is_acknowledged() {
    let Some(disk) = Tmpfs::mount("3m") else {
        return;
    };
    let db = TestDatabase::sqlite_at(&disk.path().join("tollgate.db"));
    let mut app = spawn_app_in(db, |c| c.store.busy_timeout = Duration::from_secs(1)).await;
    let t = now();
    assert_eq!(
        app.deliver(&event("evt_full_0", t - 30, "active")).await,
        "applied"
    );
    assert!(app.access_for_customer("cus_full").await.has_access);

    // The disk fills up: deliveries fail and are not acknowledged.
    let filler = disk.fill();
    let mut refused = 0;
    for (i, status) in [(1, "past_due"), (2, "unpaid")] {
        let r = app
            .post_webhook(&event(&format!("evt_full_{i}"), t - 30 + i, status))
            .await;
        assert_eq!(r.status, 503, "delivery {i} on a full disk: {}", r.body);
        refused += 1;
    }
    assert_eq!(readyz(&app).await.0, 503, "unready while writes fail");

    // Space comes back: writes work again, and what is acknowledged is
    // really committed.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&app).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.deliver(&event("evt_full_cancel", t - 10, "canceled"))
            .await,
        "applied"
    );
    let answer = app.access_for_customer("cus_full").await;
    assert!(
        !answer.has_access && answer.status == "canceled",
        "{answer:?}"
    );

    // A restart (a new process on the same file) sees exactly that.
    app.restart().await;
    let stored = app.store.get_event("evt_full_cancel").await.unwrap();
    assert_eq!(stored.map(|e| e.outcome).as_deref(), Some("applied"));
    let answer = app.access_for_customer("cus_full").await;
    assert_eq!(answer.status, "canceled", "{answer:?}");
    // The refused deliveries were never stored; Stripe's retries are first
    // deliveries (and stale now, behind the cancellation).
    let mut stored_unacknowledged = 0;
    for i in 1..=2 {
        stored_unacknowledged += app.event_count(&format!("evt_full_{i}")).await;
    }
    assert_eq!(stored_unacknowledged, 0);
    let mut lost = 0;
    for id in ["evt_full_0", "evt_full_cancel"] {
        lost += 1 - app.event_count(id).await;
    }
    assert_eq!(lost, 0);
    let retry = app
        .post_webhook(&event("evt_full_1", t - 29, "past_due"))
        .await;
    assert_eq!(
        (retry.status, retry.body["duplicate"].clone()),
        (200, Value::Bool(false)),
        "{}",
        retry.body
    );
    eprintln!(
        "fault test sqlite disk full: refused_503={refused} acknowledged=2 lost={lost} stored_unacknowledged={stored_unacknowledged}"
    );
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_connection_killed_mid_transaction_costs_one_503_and_nothing_else() {
    if !backend_ready(Backend::Postgres, "connection killed mid-transaction").await {
        return;
    }
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.store.busy_timeout = Duration::from_secs(10)
    })
    .await;
    let t = now();
    assert_eq!(
        app.deliver(&event("evt_kill_0", t - 30, "active")).await,
        "applied"
    );

    // Another session holds the subscription's row, so the next webhook
    // waits inside its transaction; then its backend is terminated.
    let mut locker = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    locker.execute("BEGIN").await.unwrap();
    locker
        .execute("SELECT 1 FROM subscriptions WHERE id = 'sub_full' FOR UPDATE")
        .await
        .unwrap();
    let posting = {
        let body = event("evt_kill_1", t - 20, "past_due");
        let raw = serde_json::to_vec(&body).unwrap();
        let header = tollgate::signature::header_for(&app.secret, now(), &raw);
        let request = app
            .http
            .post(app.webhook_url())
            .header("Stripe-Signature", header)
            .body(raw);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    let mut admin = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    terminate_tollgate_waiting_on_a_lock(&mut admin).await;
    assert_eq!(
        posting.await.unwrap(),
        503,
        "the killed transaction is not acknowledged"
    );
    locker.execute("ROLLBACK").await.unwrap();

    // Later writes are durable: a separate session sees them at once.
    let other = Sub::new("sub_after", "cus_after", "active", t + 86_400);
    let after = subscription_event(
        "evt_kill_2",
        "customer.subscription.created",
        t - 10,
        &other,
        Shape::Basil,
    );
    assert_eq!(app.deliver(&after).await, "applied");
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM events WHERE id IN ('evt_kill_1', 'evt_kill_2')")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(count, 1, "only the acknowledged event is stored");
    let stored_unacknowledged = count - 1;
    // Stripe's retry of the refused event is a first delivery, and applies.
    assert_eq!(
        app.deliver(&event("evt_kill_1", t - 20, "past_due")).await,
        "applied"
    );
    assert_eq!(app.access_for_customer("cus_full").await.status, "past_due");
    assert_eq!(readyz(&app).await.0, 200);
    let (lost,): (i64,) = sqlx::query_as(
        "SELECT 3 - COUNT(*) FROM events WHERE id IN ('evt_kill_0', 'evt_kill_1', 'evt_kill_2')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(lost, 0);
    eprintln!(
        "fault test postgres connection killed: refused_503=1 acknowledged=3 lost={lost} stored_unacknowledged={stored_unacknowledged}"
    );
}

/// Waits (up to 10 s) for a session of Tollgate's to wait on a lock in
/// `admin`'s database, and terminates it, as a crashed connection would
/// end. Only that database's: tests running beside this one have their
/// own, and their servers wait on locks too.
pub(crate) async fn terminate_tollgate_waiting_on_a_lock(admin: &mut sqlx::PgConnection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: Option<(i32,)> = sqlx::query_as(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'tollgate' \
             AND datname = current_database() AND wait_event_type = 'Lock' LIMIT 1",
        )
        .fetch_optional(&mut *admin)
        .await
        .unwrap();
        if let Some((pid,)) = waiting {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut *admin)
                .await
                .unwrap();
            return;
        }
        assert!(Instant::now() < deadline, "tollgate never waited on a lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
