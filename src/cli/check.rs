//! `tollgate check`: one HasAccess call from the shell, for scripts and
//! health checks. The exit status is the answer: 0 granted, 1 denied, 2
//! when no answer could be had (see [`Answer::exit_code`] and
//! [`EXIT_ERROR`]).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tonic::transport::Channel;

use super::{access_json, human, parse_endpoint, record};
use crate::clock::parse_duration;
use crate::proto;
use crate::proto::entitlements_client::EntitlementsClient;

/// Exit status when no answer could be had: the server is unreachable, the
/// call failed or the arguments were refused (clap's usage errors exit 2
/// too).
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// gRPC address of a running `tollgate serve`: HOST:PORT, with or
    /// without http://.
    #[arg(
        long,
        env = "TOLLGATE_ADDR",
        default_value = "http://127.0.0.1:50051",
        value_parser = parse_endpoint
    )]
    pub addr: String,
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Only count subscriptions to this product: a Stripe product id
    /// (prod_...) or a price lookup_key.
    #[arg(long)]
    pub product: Option<String>,
    /// Only grant through a product that carries this Stripe Entitlements
    /// feature (its lookup_key, e.g. export).
    #[arg(long)]
    pub feature: Option<String>,
    /// The server's TOLLGATE_API_TOKEN, when it has one (sent as a bearer
    /// token).
    #[arg(long, env = "TOLLGATE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Longest the whole call may take, connecting included (e.g. 500ms, 2s).
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Print the answer as JSON; errors are then JSON too, on stdout:
    /// {"error": "..."}.
    #[arg(long)]
    pub json: bool,
}

/// Who access is asked about: exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SubjectArgs {
    /// The product's own user id (as passed to Checkout in
    /// client_reference_id or user id metadata).
    #[arg(long)]
    pub user_id: Option<String>,
    /// A Stripe customer id (cus_...).
    #[arg(long)]
    pub customer_id: Option<String>,
}

/// Durations, with milliseconds too: a health check wants `500ms`.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the timeout must be more than 0".to_owned());
    }
    Ok(d)
}

/// What the server answered, ready to print.
#[derive(Debug)]
pub struct Answer {
    pub has_access: bool,
    /// The text to print on stdout: a record, or JSON with `--json`.
    pub output: String,
}

impl Answer {
    /// 0 when access is granted, 1 when it is denied.
    pub fn exit_code(&self) -> u8 {
        if self.has_access {
            0
        } else {
            1
        }
    }
}

/// Asks the server once.
pub async fn run(args: CheckArgs) -> anyhow::Result<Answer> {
    let endpoint = Channel::from_shared(args.addr.clone())
        .with_context(|| format!("invalid --addr {}", args.addr))?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    let call = async {
        let channel = endpoint.connect().await.with_context(|| {
            format!(
                "cannot reach {} (is `tollgate serve` listening there?)",
                args.addr
            )
        })?;
        let mut request = tonic::Request::new(proto::HasAccessRequest {
            user_id: args.subject.user_id.clone().unwrap_or_default(),
            customer_id: args.subject.customer_id.clone().unwrap_or_default(),
            product: args.product.clone().unwrap_or_default(),
            feature: args.feature.clone().unwrap_or_default(),
        });
        if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
            let value = format!("Bearer {token}")
                .parse()
                .context("--token is not a valid header value")?;
            request.metadata_mut().insert("authorization", value);
        }
        EntitlementsClient::new(channel)
            .has_access(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))
    };
    let answer = tokio::time::timeout(args.timeout, call)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from {} within {}",
                args.addr,
                humantime::format_duration(args.timeout)
            )
        })??;
    let value = access_json(&answer);
    let output = if args.json {
        serde_json::to_string_pretty(&value).expect("BUG: json values serialize")
    } else {
        record(&human(&value))
    };
    Ok(Answer {
        has_access: answer.has_access,
        output,
    })
}
