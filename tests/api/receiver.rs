//! A product backend's notification endpoint, for push tests: a real HTTP
//! server on loopback that fails a set number of times, then accepts.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub signature: Option<String>,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    fail_first: usize,
    /// Also fail every n-th request (0: never).
    fail_every: usize,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut inner = inner.lock().unwrap();
    let n = inner.received.len() + 1;
    let fail = n <= inner.fail_first || (inner.fail_every > 0 && n % inner.fail_every == 0);
    let status = if fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    inner.received.push(Received {
        body: body.to_vec(),
        signature: headers
            .get("tollgate-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: status.as_u16(),
    });
    status
}

impl Receiver {
    /// Answers 503 to the first `fail_first` requests, then 200.
    pub async fn start(fail_first: usize) -> Receiver {
        Receiver::start_with(fail_first, 0).await
    }

    /// Also answers 503 to every `fail_every`-th request.
    pub async fn start_with(fail_first: usize, fail_every: usize) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            fail_first,
            fail_every,
            received: Vec::new(),
        }));
        let app = Router::new()
            .route("/hooks/tollgate", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/tollgate", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { inner, url }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }
}
