//! The ceiling: a bare tonic server for `tollgate.v1.Entitlements/HasAccess`
//! that answers from a `HashMap` preloaded with `--users` users (`user_{i}`),
//! with answers shaped like Tollgate's. Same tonic, same runtime, no cache,
//! no store, no policy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tollgate::proto::entitlements_server::{Entitlements, EntitlementsServer};
use tollgate::proto::{HasAccessRequest, HasAccessResponse, Reason};
use tonic::{Request, Response, Status};

#[derive(Parser)]
#[command(about = "Bare tonic HasAccess server answering from a HashMap")]
struct Args {
    /// Users to preload (`user_0` .. `user_{N-1}`).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Address to bind; port 0 picks one. The bound address is printed.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Set TCP_NODELAY on accepted connections. Off by default, like
    /// Tollgate: tonic sets it only on listeners it binds itself, not on a
    /// `serve_with_incoming` stream.
    #[arg(long)]
    nodelay: bool,
}

struct MapService {
    answers: Arc<HashMap<String, HasAccessResponse>>,
}

#[tonic::async_trait]
impl Entitlements for MapService {
    async fn has_access(
        &self,
        request: Request<HasAccessRequest>,
    ) -> Result<Response<HasAccessResponse>, Status> {
        let req = request.into_inner();
        if req.user_id.is_empty() == req.customer_id.is_empty() {
            return Err(Status::invalid_argument(
                "set exactly one of user_id or customer_id",
            ));
        }
        let answer = self
            .answers
            .get(&req.user_id)
            .cloned()
            .unwrap_or_else(|| HasAccessResponse {
                has_access: false,
                reason: Reason::NoSubscription as i32,
                detail: "no subscription found".to_owned(),
                ..Default::default()
            });
        Ok(Response::new(answer))
    }

    /// The baseline measures HasAccess only.
    async fn list_entitlements(
        &self,
        _request: Request<tollgate::proto::ListEntitlementsRequest>,
    ) -> Result<Response<tollgate::proto::ListEntitlementsResponse>, Status> {
        Err(Status::unimplemented("the baseline serves HasAccess only"))
    }
}

fn answer(i: u64, now: i64) -> HasAccessResponse {
    let end = now + 30 * 86400;
    HasAccessResponse {
        has_access: true,
        reason: Reason::Active as i32,
        subscription_id: format!("sub_{i}"),
        status: "active".to_owned(),
        current_period_end: end,
        access_until: end,
        verified_at: now - 60,
        detail: format!(
            "subscription sub_{i} is active until {}",
            tollgate::policy::fmt_time(end)
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let now = tollgate_bench::now_secs();
    let started = std::time::Instant::now();
    let answers: HashMap<String, HasAccessResponse> = (0..args.users)
        .map(|i| (format!("user_{i}"), answer(i, now)))
        .collect();
    eprintln!(
        "baseline: {} users loaded in {:.2}s",
        answers.len(),
        started.elapsed().as_secs_f64()
    );
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    println!("listening grpc_addr={addr}");
    let service = MapService {
        answers: Arc::new(answers),
    };
    let nodelay = args.nodelay;
    let incoming = TcpListenerStream::new(listener).map(move |s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(nodelay);
        }
        s
    });
    tonic::transport::Server::builder()
        .add_service(EntitlementsServer::new(service))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
