//! Helpers around h2load, which speaks gRPC when given a pre-encoded body:
//!
//! - `encode`: writes the gRPC frame of `HasAccessRequest{user_id}` (1 zero
//!   byte, a 4-byte big-endian length, the protobuf bytes) for `h2load -d`,
//!   with a `feature` (or `product`) to check if asked.
//! - `stats`: turns h2load's output and `--log-file` into one JSON line with
//!   requests/s and p50/p90/p99 (h2load prints no percentiles).
//! - `decode`: decodes a gRPC response body (e.g. saved by curl) as a
//!   `HasAccessResponse` and prints it as JSON.
//!
//! h2load sends the same body on every request, so it can only measure one
//! subject: the hot path (a cached user). The realistic hot/cold mix is
//! `grpc-load`'s job.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use prost::Message;
use tollgate::proto::{HasAccessRequest, HasAccessResponse};

#[derive(Parser)]
#[command(about = "gRPC frames for h2load, and h2load result parsing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the gRPC request frame for one user.
    Encode {
        #[arg(long, default_value = "user_0")]
        user: String,
        /// An Entitlements feature lookup key to check.
        #[arg(long, default_value = "")]
        feature: String,
        /// A product id or price lookup key to check.
        #[arg(long, default_value = "")]
        product: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Summarize an h2load run as a JSON line.
    Stats {
        /// h2load's standard output.
        #[arg(long)]
        output: PathBuf,
        /// The file given to h2load's --log-file.
        #[arg(long)]
        log_file: PathBuf,
        #[arg(long, default_value = "section=h2load")]
        tags: String,
    },
    /// Decode a gRPC response body into JSON.
    Decode {
        #[arg(long)]
        input: PathBuf,
    },
}

fn frame(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The number before `word` on the h2load line starting with `prefix`,
/// e.g. `("requests:", "succeeded")`.
fn count_in(text: &str, prefix: &str, word: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
    let rest = line.trim_start().strip_prefix(prefix)?;
    rest.split(',').find_map(|part| {
        let mut it = part.split_whitespace();
        let n = it.next()?.parse().ok()?;
        (it.next()? == word).then_some(n)
    })
}

fn stats(output: &str, log: &str) -> serde_json::Value {
    // "finished in 4.00s, 59284.50 req/s, 7.35MB/s"
    let finished = output.lines().find(|l| l.starts_with("finished in"));
    let rps = finished
        .and_then(|l| l.split(',').nth(1))
        .and_then(|p| p.trim().strip_suffix(" req/s"))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    let mut h = tollgate_bench::new_histogram();
    let mut non_200 = 0u64;
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    for line in log.lines() {
        let mut cols = line.split('\t');
        let (Some(_start), Some(status), Some(us)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        if status != "200" {
            non_200 += 1;
            *statuses.entry(status.to_owned()).or_default() += 1;
        }
        if let Ok(us) = us.trim().parse::<u64>() {
            h.saturating_record(us.clamp(1, 60_000_000));
        }
    }
    let succeeded = count_in(output, "requests:", "succeeded").unwrap_or(0);
    let failed = count_in(output, "requests:", "failed").unwrap_or(0);
    let errored = count_in(output, "requests:", "errored").unwrap_or(0);
    let s2xx = count_in(output, "status codes:", "2xx").unwrap_or(0);
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let only_cut_off = statuses.keys().all(|s| s == "0");
    serde_json::json!({
        "rps": rps.round(),
        "succeeded": succeeded,
        "failed": failed,
        "errored": errored,
        "status_2xx": s2xx,
        "logged": h.len(),
        "logged_non_200": non_200,
        "non_200_statuses": statuses,
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": h.max() as f64 / 1000.0,
        // h2load logs status 0 for a few requests cut off when the measured
        // duration ends (seen against the baseline too); only real statuses
        // other than 200 count against a run.
        "ok": rps > 0.0
            && failed == 0
            && errored == 0
            && succeeded > 0
            && only_cut_off,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Encode {
            user,
            feature,
            product,
            out,
        } => {
            let body = frame(&HasAccessRequest {
                user_id: user,
                feature,
                product,
                ..Default::default()
            });
            std::fs::write(&out, &body)?;
            eprintln!("wrote {} bytes to {}", body.len(), out.display());
        }
        Command::Stats {
            output,
            log_file,
            tags,
        } => {
            let output = std::fs::read_to_string(output)?;
            let log = std::fs::read_to_string(log_file).unwrap_or_default();
            tollgate_bench::emit(&tags, stats(&output, &log));
        }
        Command::Decode { input } => {
            let bytes = std::fs::read(input)?;
            if bytes.len() < 5 || bytes[0] != 0 {
                return Err(
                    format!("not an uncompressed gRPC frame ({} bytes)", bytes.len()).into(),
                );
            }
            let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            let body = bytes.get(5..5 + len).ok_or("truncated gRPC frame")?;
            let r = HasAccessResponse::decode(body)?;
            println!(
                "{}",
                serde_json::json!({
                    "has_access": r.has_access,
                    "reason": r.reason().as_str_name(),
                    "subscription_id": r.subscription_id,
                    "status": r.status,
                    "access_until": r.access_until,
                    "detail": r.detail,
                })
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "finished in 4.00s, 59284.50 req/s, 7.35MB/s
requests: 237138 total, 237138 started, 237138 done, 237138 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 237138 2xx, 0 3xx, 0 4xx, 0 5xx
";

    #[test]
    fn parses_h2load_output() {
        let s = stats(OUTPUT, "1\t200\t100\n2\t200\t300\n");
        assert_eq!(s["rps"], 59285.0);
        assert_eq!(s["succeeded"], 237138);
        assert_eq!(s["status_2xx"], 237138);
        assert_eq!(s["ok"], true);
        assert_eq!(s["logged"], 2);
    }

    #[test]
    fn frame_has_grpc_prefix() {
        let f = frame(&HasAccessRequest {
            user_id: "user_0".into(),
            ..Default::default()
        });
        assert_eq!(f[0], 0);
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            f.len() - 5
        );
    }
}
