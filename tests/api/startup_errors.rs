//! The real binary with a database it cannot open: each failure names what
//! was tried and why, in one line with a fix, exits non-zero, and quickly.

use std::time::{Duration, Instant};

use crate::helpers::{backend_ready, pg_admin_url, run_tollgate, unused_addr, Backend, SECRET};

/// `tollgate serve` on `url`; returns (exit code, stderr, how long it took).
async fn serve_on(url: &str) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = run_tollgate(
        &["serve"],
        &[
            ("TOLLGATE_DATABASE_URL", url),
            ("STRIPE_WEBHOOK_SECRET", SECRET),
            ("TOLLGATE_HTTP_ADDR", "127.0.0.1:0"),
            ("TOLLGATE_GRPC_ADDR", "127.0.0.1:0"),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, started.elapsed())
}

/// The one `tollgate: error:` line.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("tollgate: error:"))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"))
}

#[tokio::test]
async fn a_missing_sqlite_directory_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir");
    let url = format!("sqlite://{}/tollgate.db", missing.display());

    let (code, stderr, took) = serve_on(&url).await;

    assert_ne!(code, Some(0));
    let line = error_line(&stderr);
    assert!(
        line.contains(&format!("{}/tollgate.db", missing.display())),
        "{line}"
    );
    assert!(line.contains("unable to open database file"), "{line}");
    assert!(
        line.contains(&format!("mkdir -p {}", missing.display())),
        "{line}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn the_migrate_command_names_the_cause_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/tollgate.db", dir.path().display());

    let out = run_tollgate(&["migrate"], &[("TOLLGATE_DATABASE_URL", &url)]).await;

    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(error_line(&stderr).contains("does not exist"), "{stderr}");
}

#[tokio::test]
async fn a_refused_postgres_connection_names_host_and_port_but_not_the_password() {
    let addr = unused_addr();
    let url = format!("postgres://tollgate:hunter2@{addr}/tollgate");

    let (code, stderr, took) = serve_on(&url).await;

    assert_ne!(code, Some(0));
    let line = error_line(&stderr);
    assert!(line.contains(&addr.to_string()), "{line}");
    assert!(line.contains("database tollgate, user tollgate"), "{line}");
    assert!(
        line.to_lowercase().contains("refused"),
        "the driver's error: {line}"
    );
    assert!(
        line.contains(&format!("is PostgreSQL running on {addr}?")),
        "{line}"
    );
    assert!(!line.contains("pool timed out"), "{line}");
    assert!(!stderr.contains("hunter2"), "never the password: {stderr}");
    assert!(
        took < Duration::from_secs(10),
        "no pool timeout wait: {took:?}"
    );
}

#[tokio::test]
async fn a_nonexistent_postgres_database_suggests_createdb() {
    if !backend_ready(
        Backend::Postgres,
        "a_nonexistent_postgres_database_suggests_createdb",
    )
    .await
    {
        return;
    }
    let name = format!("tollgate_missing_{}", std::process::id());
    let base = pg_admin_url();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);

    let (code, stderr, took) = serve_on(&url).await;

    assert_ne!(code, Some(0));
    let line = error_line(&stderr);
    assert!(line.contains(&format!("database {name}")), "{line}");
    assert!(
        line.contains("does not exist"),
        "the driver's error: {line}"
    );
    assert!(line.contains("createdb -h"), "{line}");
    assert!(line.ends_with(&format!("{name})")), "{line}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
