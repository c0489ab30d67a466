//! Never acknowledge what is not stored: a locked or unavailable database
//! gets a 503, and Stripe's retry then succeeds.

use std::time::Duration;

use sqlx::{Connection, Executor};

use crate::helpers::{now, spawn_app_on, spawn_app_with, Backend};
use crate::on_both_backends;
use crate::stripe::{subscription_event, Shape, Sub};

on_both_backends!(
    a_locked_database_gets_503_and_the_retry_succeeds,
    readiness_reflects_the_database
);

async fn a_locked_database_gets_503_and_the_retry_succeeds(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.store.busy_timeout = Duration::from_millis(300)
    })
    .await;
    let sub = Sub::new("sub_lock", "cus_lock", "active", now() + 86400);
    let event = subscription_event(
        "evt_lock",
        "customer.subscription.created",
        now(),
        &sub,
        Shape::Basil,
    );

    // Another client holds the write lock.
    let release = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
            conn.execute("BEGIN EXCLUSIVE").await.unwrap();
            Locker::Sqlite(conn)
        }
        Backend::Postgres => Locker::Postgres(crate::helpers::lock_table(&app.db, "events").await),
    };
    let r = app.post_webhook(&event).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"], "event not stored; retry later");
    release.rollback().await;

    assert_eq!(
        app.event_count("evt_lock").await,
        0,
        "the refused delivery stored nothing"
    );
    // Stripe retries the same event: it is a first delivery, and applies.
    assert_eq!(app.deliver(&event).await, "applied");
    assert!(app.access_for_customer("cus_lock").await.has_access);
}

enum Locker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Locker {
    async fn rollback(self) {
        match self {
            Locker::Sqlite(mut c) => {
                c.execute("ROLLBACK").await.unwrap();
            }
            Locker::Postgres(mut c) => {
                c.execute("ROLLBACK").await.unwrap();
            }
        }
    }
}

async fn readiness_reflects_the_database(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let base = format!("http://{}", app.http_addr);
    let r = app
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ready"], true);
}

#[tokio::test]
async fn shutdown_drains_and_returns_cleanly() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let sub = Sub::new("sub_stop", "cus_stop", "active", now() + 86400);
    app.deliver(&subscription_event(
        "evt_stop",
        "customer.subscription.created",
        now(),
        &sub,
        Shape::Basil,
    ))
    .await;
    let http_addr = app.http_addr;
    app.stop().await.expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(http_addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn grpc_health_and_reflection_v1_and_v1alpha_answer() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let app = spawn_app_on(Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "tollgate.v1.Entitlements"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "SERVING for {service:?}");
    }
    // v1, as grpcurl speaks it.
    let names = {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("a service list");
        };
        list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
    };
    // v1alpha, as Python's grpcio-reflection, Postman and evans speak it.
    let alpha_names = {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("a service list over v1alpha");
        };
        list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
    };
    for names in [names, alpha_names] {
        assert!(
            names.contains(&"tollgate.v1.Entitlements".to_owned())
                && names.contains(&"tollgate.v1.Admin".to_owned()),
            "{names:?}"
        );
    }
}
