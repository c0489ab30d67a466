//! A gRPC load generator for `tollgate.v1.Entitlements/HasAccess` (tonic
//! client): `--connections` HTTP/2 connections, `--inflight` requests in
//! flight on each, for a fixed duration or request count, optionally at a
//! fixed global `--rate`. Per-request latency goes into an HDR histogram;
//! the result is one JSON line (requests/s, p50, p90, p99).
//!
//! Patterns:
//! - `mix`: `--hot-fraction` (90%) of requests go to a hot set of
//!   `--hot-users` (10 000) users, which are cached after their first touch;
//!   the rest are uniform over all `--users` (mostly cold: a store read).
//! - `hot`: one user (`--user`), always cached.
//! - `sequential`: each of `--users` users once, in order; touches every
//!   user so the server's cache holds them all.
//!
//! `probe` waits for a server to answer one HasAccess (reading its address
//! from the server's log if asked) and prints when it first did.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use tollgate::proto::entitlements_client::EntitlementsClient;
use tollgate::proto::HasAccessRequest;
use tollgate_bench::{emit, new_histogram, parse_duration, record, summary, Pacer, Rng};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(about = "HasAccess load generator (tonic client)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send load and print one JSON line.
    Run(RunArgs),
    /// Wait until HasAccess answers; print the time it first did.
    Probe(ProbeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pattern {
    Mix,
    Hot,
    Sequential,
}

#[derive(Parser)]
struct RunArgs {
    /// gRPC address of the server (Tollgate or baseline).
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value = "mix")]
    pattern: Pattern,
    /// Users in the database (`user_0` .. `user_{N-1}`).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    #[arg(long, default_value_t = 10_000)]
    hot_users: u64,
    #[arg(long, default_value_t = 0.9)]
    hot_fraction: f64,
    /// The user for `--pattern hot`.
    #[arg(long, default_value = "user_0")]
    user: String,
    /// HTTP/2 connections.
    #[arg(short = 'c', long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'm', long, default_value_t = 16)]
    inflight: usize,
    /// Measured duration (ignored for `sequential`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before the measured duration.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Stop after this many measured requests instead (0 = use --duration).
    #[arg(long, default_value_t = 0)]
    requests: u64,
    /// Global request rate limit per second (0 = as fast as possible).
    /// Latency is measured from the actual send.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tags added to the JSON result line.
    #[arg(long, default_value = "section=grpc_load")]
    tags: String,
}

#[derive(Parser)]
struct ProbeArgs {
    /// Server address; or give --log-file to read it from the server's log.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The server's log: the `listening ... grpc_addr=...` line is awaited.
    #[arg(long)]
    log_file: Option<PathBuf>,
    #[arg(long, default_value = "user_0")]
    user: String,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(long, default_value = "section=probe")]
    tags: String,
}

async fn connect(addr: SocketAddr) -> Result<EntitlementsClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(EntitlementsClient::new(channel))
}

fn request(user_id: String) -> HasAccessRequest {
    HasAccessRequest {
        user_id,
        ..Default::default()
    }
}

#[derive(Default)]
struct Totals {
    errors: AtomicU64,
    granted: AtomicU64,
    denied: AtomicU64,
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(args);
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        clients.push(connect(args.addr).await?);
    }
    let sequential = args.pattern == Pattern::Sequential;
    let warmup = if sequential {
        Duration::ZERO
    } else {
        args.warmup
    };
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = (!sequential && args.requests == 0).then(|| measure_from + args.duration);
    let next_index = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Totals::default());
    let pacer = (args.rate > 0.0).then(|| Arc::new(Pacer::new(args.rate)));

    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        for m in 0..args.inflight.max(1) {
            let mut client = client.clone();
            let args = args.clone();
            let next_index = next_index.clone();
            let measured = measured.clone();
            let totals = totals.clone();
            let pacer = pacer.clone();
            let seed = args.seed.wrapping_mul(1_000_003) + (c * 1000 + m) as u64;
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                let mut h = new_histogram();
                loop {
                    let user = match args.pattern {
                        Pattern::Sequential => {
                            let i = next_index.fetch_add(1, Ordering::Relaxed);
                            if i >= args.users {
                                break;
                            }
                            format!("user_{i}")
                        }
                        Pattern::Hot => args.user.clone(),
                        Pattern::Mix => {
                            let i = if rng.unit() < args.hot_fraction {
                                rng.below(args.hot_users.min(args.users).max(1))
                            } else {
                                rng.below(args.users.max(1))
                            };
                            format!("user_{i}")
                        }
                    };
                    if let Some(p) = &pacer {
                        p.wait().await;
                    }
                    let sent = Instant::now();
                    if let Some(d) = deadline {
                        if sent >= d {
                            break;
                        }
                    }
                    let in_window = sent >= measure_from;
                    if in_window
                        && args.requests > 0
                        && !sequential
                        && measured.fetch_add(1, Ordering::Relaxed) >= args.requests
                    {
                        break;
                    }
                    let result = client.has_access(request(user)).await;
                    let took = sent.elapsed();
                    if !in_window {
                        continue;
                    }
                    match result {
                        Ok(r) => {
                            record(&mut h, took);
                            if r.into_inner().has_access {
                                totals.granted.fetch_add(1, Ordering::Relaxed);
                            } else {
                                totals.denied.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            totals.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                h
            }));
        }
    }
    let mut h = new_histogram();
    for t in tasks {
        h.add(t.await?)?;
    }
    let end = Instant::now();
    let seconds = match deadline {
        Some(d) => d.min(end).saturating_duration_since(measure_from),
        None => end.saturating_duration_since(measure_from),
    }
    .as_secs_f64();
    let mut out = summary(&h, seconds);
    let pattern = match args.pattern {
        Pattern::Mix => "mix",
        Pattern::Hot => "hot",
        Pattern::Sequential => "sequential",
    };
    out["pattern"] = pattern.into();
    out["connections"] = args.connections.into();
    out["inflight"] = args.inflight.into();
    out["target_rate"] = args.rate.into();
    out["errors"] = totals.errors.load(Ordering::Relaxed).into();
    out["granted"] = totals.granted.load(Ordering::Relaxed).into();
    out["denied"] = totals.denied.load(Ordering::Relaxed).into();
    emit(&args.tags, out);
    Ok(())
}

/// Drops ANSI colour sequences from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `key=ADDR` (human logs) or `"key":"ADDR"` (JSON logs).
fn addr_after(line: &str, key: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    let at = line.find(key)? + key.len();
    let rest = line[at..].trim_start_matches(['"', ':', '=', ' ']);
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

async fn probe(args: ProbeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let give_up = Instant::now() + args.timeout;
    let (grpc, http) = loop {
        if let Some(a) = args.addr {
            break (a, None);
        }
        let path = args.log_file.as_ref().ok_or("give --addr or --log-file")?;
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("grpc_addr")) {
            if let Some(g) = addr_after(line, "grpc_addr") {
                break (g, addr_after(line, "http_addr"));
            }
        }
        if Instant::now() > give_up {
            return Err("timed out waiting for the listening line".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let answer = match connect(grpc).await {
            Ok(mut c) => c.has_access(request(args.user.clone())).await.ok(),
            Err(_) => None,
        };
        if let Some(r) = answer {
            let r = r.into_inner();
            emit(
                &args.tags,
                serde_json::json!({
                    "ok": true,
                    "first_ok_unix_ns": tollgate_bench::now_ns().to_string(),
                    "grpc_addr": grpc.to_string(),
                    "http_addr": http.map(|a| a.to_string()),
                    "attempts": attempts,
                    "has_access": r.has_access,
                    "reason": r.reason().as_str_name(),
                }),
            );
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(format!("no successful HasAccess on {grpc} within the timeout").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Run(a) => run(a).await,
        Command::Probe(a) => probe(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_from_both_log_formats() {
        let json = r#"{"fields":{"message":"listening","http_addr":"127.0.0.1:4000","grpc_addr":"127.0.0.1:5000"}}"#;
        assert_eq!(
            addr_after(json, "grpc_addr"),
            Some("127.0.0.1:5000".parse().unwrap())
        );
        let human = "INFO tollgate::startup: listening \x1b[3mhttp_addr\x1b[0m\x1b[2m=\x1b[0m127.0.0.1:4000 grpc_addr=127.0.0.1:5000";
        assert_eq!(
            addr_after(human, "http_addr"),
            Some("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            addr_after(human, "grpc_addr"),
            Some("127.0.0.1:5000".parse().unwrap())
        );
    }
}
