//! Wiring: build the domain, bind both listeners, run until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::admin::Admin;
use crate::cache::SubjectCache;
use crate::changes::Changes;
use crate::clock::{Clock, SystemClock};
use crate::config::{redacted_url, Config, ConnectionLimits};
use crate::features::Features;
use crate::grpc::{admin_auth, api_auth, AdminService, EntitlementsService};
use crate::http::{self, HttpState};
use crate::ledger::Ledger;
use crate::notify::Dispatcher;
use crate::proto::admin_server::AdminServer;
use crate::proto::entitlements_server::EntitlementsServer;
use crate::reconciler::Reconciler;
use crate::refresh::Refresher;
use crate::related::RelatedReader;
use crate::reviews::Reviews;
use crate::store::{self, StoreError};
use crate::stripe::StripeClient;
use crate::tasks::supervise;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not open the database")]
    Store(#[from] StoreError),
    #[error("could not bind {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("could not build gRPC reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Largest header block a gRPC client may send (metadata included).
const GRPC_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Largest gRPC request accepted: every request is a few ids, each at most
/// 255 bytes; tonic's default of 4 MiB would let one call pin megabytes.
const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024;

/// How long a thin event waits for its object from Stripe before the
/// delivery is answered 503: well under the time Stripe waits for an
/// answer, and enough for a retry or two of a slow read.
const THIN_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Work that runs beside the servers until shutdown.
struct Background {
    store: Arc<dyn crate::store::Store>,
    cache: Arc<SubjectCache>,
    /// `Some(interval)` when the reconciler runs on a timer.
    reconcile_every: Option<Duration>,
    reconciler: Arc<Reconciler>,
    dispatcher: Option<Arc<Dispatcher>>,
    /// Owns the refresh and follow-up tasks drained at shutdown.
    refresher: Arc<Refresher>,
}

/// The admin console's port, bound only with an admin token.
struct Console {
    listener: TcpListener,
    addr: SocketAddr,
    router: axum::Router,
}

pub struct Application {
    console: Option<Console>,
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    router: axum::Router,
    grpc: tonic::service::Routes,
    background: Background,
    limits: ConnectionLimits,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { addr, source })?;
    Ok((listener, bound))
}

impl Application {
    /// Opens and migrates the store, builds the services and binds both
    /// listeners, so port 0 works and the real ports are known right away.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with the clock every service reads, so tests
    /// can stand time still at an edge.
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        // Install the recorder before anything records.
        crate::metrics::handle();
        // Bind first: a port clash is reported before anything is written.
        let (http_listener, http_addr) = bind(config.http_addr).await?;
        let (grpc_listener, grpc_addr) = bind(config.grpc_addr).await?;
        let console_listener = match &config.admin_token {
            Some(_) => Some(bind(config.console.addr).await?),
            None => None,
        };
        let store = store::connect(&config.store).await?;
        tracing::info!(database = %redacted_url(&config.store.url), backend = store.backend(), ledger_writers = store.writers(), "store ready");

        let cache = Arc::new(SubjectCache::new(
            config.cache_max_bytes,
            config.cache_ttl,
            config.staleness.stale_after,
        ));
        let changes = Arc::new(Changes::new(
            clock.clone(),
            cache.clone(),
            config.policy,
            config.hold_revocations,
        ));
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let client = StripeClient::new(&config.stripe).map(Arc::new);
        if client.is_none() {
            tracing::warn!("STRIPE_API_KEY not set: stale records get grace but are never refreshed, the reconciler is off, thin events are recorded as failed (replay them once a key is set), feature checks have no product feature maps and decide only from entitlements.active_entitlement_summary.updated events (a feature no summary names answers REASON_FEATURE_NOT_INCLUDED), and a summary cut short (has_more) is kept as it came");
        }
        let related = Arc::new(RelatedReader::new(
            client.clone(),
            clock.clone(),
            THIN_READ_TIMEOUT,
        ));
        let ledger = Ledger::new(
            store.clone(),
            clock.clone(),
            changes.clone(),
            config.user_id_metadata_key.clone(),
            config.livemode,
            related.clone(),
        );
        let reviews = Arc::new(Reviews::new(store.clone(), clock.clone(), changes));
        let stripe_configured = client.is_some();
        let refresher = Arc::new(Refresher::new(
            client.clone(),
            clock.clone(),
            ledger.clone(),
            reviews.clone(),
            config.refresh_timeout,
            config.staleness.stale_after.min(Duration::from_secs(30)),
            // A tenth of the Stripe rate, at least one a second, for
            // customers Tollgate has never seen.
            (f64::from(config.stripe.max_rps) / 10.0).max(1.0),
        ));
        let features = Arc::new(Features::new(
            store.clone(),
            cache.clone(),
            client.clone(),
            clock.clone(),
            config.refresh_timeout,
        ));
        let access = Arc::new(Access::new(
            store.clone(),
            clock.clone(),
            cache.clone(),
            refresher.clone(),
            features.clone(),
            config.policy,
            config.staleness,
        ));
        let reconciler = Arc::new(Reconciler::new(
            crate::reconciler::Parts {
                ledger: ledger.clone(),
                refresher: refresher.clone(),
                reviews: reviews.clone(),
                features,
                store: store.clone(),
                stripe: client,
                clock: clock.clone(),
            },
            config.sweep_interval,
        ));
        let admin = Arc::new(Admin {
            ledger: ledger.clone(),
            reviews,
            store: store.clone(),
            clock: clock.clone(),
            refresher: refresher.clone(),
            reconciler: reconciler.clone(),
            access: access.clone(),
        });
        if config.admin_token.is_none() {
            tracing::info!("TOLLGATE_ADMIN_TOKEN not set: the Admin gRPC service is disabled and the admin console is not served");
        }
        let console = match (console_listener, &config.admin_token) {
            (Some((listener, addr)), Some(token)) => {
                let state = crate::console::ConsoleState {
                    oversight: Arc::new(crate::oversight::Oversight::new(admin.clone())),
                    sessions: crate::console::session::Sessions::new(
                        clock.clone(),
                        config.console.session_idle,
                    ),
                    token: Arc::from(token.as_str()),
                    secure_cookie: config.console.secure_cookie,
                };
                tracing::info!(console_addr = %addr, "admin console listening");
                Some(Console {
                    listener,
                    addr,
                    router: crate::console::router(Arc::new(state)),
                })
            }
            _ => None,
        };

        let api = config.api_token.as_deref().map(|token| {
            crate::api::router(Arc::new(crate::api::ApiState {
                access: access.clone(),
                token: Arc::from(token),
            }))
        });
        if api.is_none() {
            tracing::info!("TOLLGATE_API_TOKEN not set: no HTTP/JSON API, and gRPC Entitlements is open to whoever reaches its port");
        }
        let router = http::router(
            Arc::new(HttpState {
                ledger,
                clock: clock.clone(),
                refresher: refresher.clone(),
                store: store.clone(),
                secrets: config.secrets.clone(),
                tolerance_secs: config.signature_tolerance_secs,
                body_timeout: config.limits.http_body_timeout,
                body_budget: Arc::new(tokio::sync::Semaphore::new(http::BODY_BUDGET_BYTES)),
            }),
            api,
        );

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<EntitlementsServer<EntitlementsService>>()
            .await;
        // Both reflection versions: grpcurl speaks v1, while Python's
        // grpcio-reflection, Postman, evans and older grpcurl speak only
        // v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let auth = admin_auth(config.admin_token.clone().map(Arc::from));
        let grpc = tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(tonic::service::interceptor::InterceptedService::new(
                EntitlementsServer::new(EntitlementsService { access })
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
                api_auth(config.api_token.clone().map(Arc::from)),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                AdminServer::new(AdminService { admin })
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
                auth,
            ));

        tracing::info!(%http_addr, %grpc_addr, "listening");

        let background = Background {
            store: store.clone(),
            cache,
            reconcile_every: (config.reconciler_enabled && stripe_configured)
                .then_some(config.reconcile_interval),
            reconciler,
            refresher,
            dispatcher: config
                .push
                .map(|push| Arc::new(Dispatcher::new(store.clone(), clock.clone(), push))),
        };
        Ok(Application {
            console,
            http_listener,
            grpc_listener,
            http_addr,
            grpc_addr,
            router,
            grpc,
            background,
            limits: config.limits,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin console's address; `None` without an admin token.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(|c| c.addr)
    }

    /// Serves until `shutdown` resolves, then stops accepting connections,
    /// lets in-flight requests finish and stops background work.
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

        // Each loop runs supervised: a panic is logged, counted and the
        // loop started again, so one bad record cannot stop reconciling.
        let mut tasks = tokio::task::JoinSet::new();
        {
            let (store, cache, stop) = (
                self.background.store.clone(),
                self.background.cache.clone(),
                token.clone(),
            );
            // What the store hears from other replicas goes to the cache.
            tasks.spawn(supervise("store_watch", token.clone(), move || {
                let (store, cache, stop) = (store.clone(), cache.clone(), stop.clone());
                async move {
                    let (events, mut heard) = tokio::sync::mpsc::channel(1024);
                    let apply = async {
                        while let Some(event) = heard.recv().await {
                            cache.apply(&event);
                        }
                    };
                    tokio::join!(store.watch(events, stop), apply);
                }
            }));
        }
        if let Some(every) = self.background.reconcile_every {
            let (reconciler, stop) = (self.background.reconciler.clone(), token.clone());
            tasks.spawn(supervise("reconciler", token.clone(), move || {
                reconciler.clone().run(every, stop.clone())
            }));
        }
        if let Some(dispatcher) = self.background.dispatcher {
            let stop = token.clone();
            tasks.spawn(supervise(
                "notification_dispatcher",
                token.clone(),
                move || dispatcher.clone().run(stop.clone()),
            ));
        }

        let limits = self.limits;
        let http = crate::serve::serve_http(
            self.http_listener,
            self.router,
            crate::serve::HttpLimits {
                header_timeout: limits.http_header_timeout,
                max_connections: limits.http_max_connections,
            },
            token.clone(),
            limits.shutdown_timeout,
        );
        let incoming =
            crate::serve::capped_incoming(self.grpc_listener, limits.grpc_max_connections);
        let grpc = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.grpc_max_streams)
            // Finds peers that vanished without closing (no FIN, no RST).
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .http2_max_header_list_size(GRPC_MAX_HEADER_LIST_BYTES)
            .add_routes(self.grpc)
            .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());
        let grpc = crate::serve::with_deadline(grpc, token.clone(), limits.shutdown_timeout);

        let console = async {
            if let Some(console) = self.console {
                crate::serve::serve_http(
                    console.listener,
                    console.router,
                    crate::serve::HttpLimits {
                        header_timeout: limits.http_header_timeout,
                        // People, not Stripe: a few connections each.
                        max_connections: 64,
                    },
                    token.clone(),
                    limits.shutdown_timeout,
                )
                .await;
            }
        };

        let ((), grpc_result, ()) = tokio::join!(http, grpc, console);
        token.cancel();
        while tasks.join_next().await.is_some() {}
        self.background
            .refresher
            .drain(limits.shutdown_timeout)
            .await;
        if let Some(result) = grpc_result {
            result.map_err(std::io::Error::other)?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
