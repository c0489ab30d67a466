//! Wiring: build the domain, bind both listeners, run until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::access::Access;
use crate::cache::SubjectCache;
use crate::config::{redacted_url, Config};
use crate::grpc::EntitlementsService;
use crate::http::{self, HttpState};
use crate::ledger::Ledger;
use crate::proto::entitlements_server::EntitlementsServer;
use crate::refresh::Refresher;
use crate::store::{self, StoreError};
use crate::stripe::StripeClient;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not open the database: {0}")]
    Store(#[from] StoreError),
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("could not build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub struct Application {
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    router: axum::Router,
    grpc: tonic::service::Routes,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

impl Application {
    /// Opens and migrates the store, builds the services and binds both
    /// listeners, so port 0 works and the real ports are known right away.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let store = store::connect(&config.store).await?;
        tracing::info!(database = %redacted_url(&config.store.url), backend = store.backend(), "store ready");

        let cache = Arc::new(SubjectCache::new(
            config.cache_capacity,
            config.cache_ttl,
            config.staleness.stale_after,
        ));
        let ledger = Arc::new(Ledger::new(
            store.clone(),
            cache.clone(),
            config.user_id_metadata_key.clone(),
        ));
        let client = StripeClient::new(&config.stripe).map(Arc::new);
        if client.is_none() {
            tracing::warn!(
                "STRIPE_API_KEY not set: stale records get grace but are never refreshed"
            );
        }
        let refresher = Arc::new(Refresher::new(
            client,
            ledger.clone(),
            config.refresh_timeout,
            config.staleness.stale_after.min(Duration::from_secs(30)),
        ));
        let access = Arc::new(Access::new(
            store.clone(),
            cache,
            refresher.clone(),
            config.policy,
            config.staleness,
        ));

        let router = http::router(Arc::new(HttpState {
            ledger,
            refresher,
            store: store.clone(),
            secrets: config.secrets.clone(),
            tolerance_secs: config.signature_tolerance_secs,
        }));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<EntitlementsServer<EntitlementsService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let grpc = tonic::service::Routes::new(health_service)
            .add_service(reflection)
            .add_service(EntitlementsServer::new(EntitlementsService { access }));

        let http_listener = bind(config.http_addr).await?;
        let grpc_listener = bind(config.grpc_addr).await?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: config.http_addr,
                source,
            })?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        tracing::info!(%http_addr, %grpc_addr, "listening");

        Ok(Application {
            http_listener,
            grpc_listener,
            http_addr,
            grpc_addr,
            router,
            grpc,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting connections
    /// and lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            trigger.cancel();
        });

        let http = axum::serve(self.http_listener, self.router)
            .with_graceful_shutdown(token.clone().cancelled_owned());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(self.grpc_listener);
        let grpc = tonic::transport::Server::builder()
            .add_routes(self.grpc)
            .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());

        let (http_result, grpc_result) = tokio::join!(http, grpc);
        http_result?;
        grpc_result.map_err(std::io::Error::other)?;
        tracing::info!("stopped");
        Ok(())
    }
}
