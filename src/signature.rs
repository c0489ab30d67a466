//! Stripe-Signature verification, exactly as Stripe's official libraries do it.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`. The signed payload
//! is `"{t}.{raw body}"`, the MAC is HMAC-SHA256 keyed with the endpoint
//! secret's UTF-8 bytes (the `whsec_` prefix included). Only `v1` counts, any
//! `v1` may match any configured secret (secret rotation), comparisons run in
//! constant time, and a timestamp outside the tolerance is refused in both
//! directions. The same scheme signs Tollgate's own outgoing notifications.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The messages mirror the official SDKs' cases
/// and are safe to show to the sender: they never contain a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header: no valid timestamp")]
    MalformedHeader,
    #[error("no v1 signature in Stripe-Signature header")]
    NoV1Signature,
    #[error("no signature matches the expected signature for the payload")]
    NoMatchingSignature,
    #[error("timestamp outside the tolerance zone")]
    TimestampOutsideTolerance,
}

impl SignatureError {
    /// A short label for metrics and logs.
    pub fn cause(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader => "missing_header",
            SignatureError::MalformedHeader => "malformed_header",
            SignatureError::NoV1Signature => "no_v1_signature",
            SignatureError::NoMatchingSignature => "no_matching_signature",
            SignatureError::TimestampOutsideTolerance => "timestamp_outside_tolerance",
        }
    }
}

/// One or more endpoint secrets. Several are configured while a secret is
/// being rolled. `Debug` never prints them.
#[derive(Clone)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets(<{} redacted>)", self.0.len())
    }
}

impl Secrets {
    /// Parses a comma-separated list. Blank entries are ignored; the result
    /// must hold at least one secret.
    pub fn parse(list: &str) -> Result<Self, &'static str> {
        let secrets: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if secrets.is_empty() {
            return Err("no secret given");
        }
        Ok(Secrets(secrets))
    }

    /// Whether every secret looks like one Stripe issues: `whsec_` and then
    /// letters, digits or underscores. The README's placeholder `whsec_...`, an API key
    /// or a stray quote do not.
    pub fn all_look_like_stripe_secrets(&self) -> bool {
        self.0.iter().all(|s| {
            s.strip_prefix("whsec_").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        })
    }

    /// The first (primary) secret, used to sign outgoing test requests.
    pub fn first(&self) -> &str {
        &self.0[0]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The parsed header: its timestamp and every `v1` signature, decoded.
#[derive(Debug, PartialEq, Eq)]
struct ParsedHeader {
    timestamp: i64,
    v1: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<ParsedHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            // The SDKs compare the computed lowercase hex string with the
            // header's: anything else (uppercase hex, not hex at all) can
            // never match, but does not make the header malformed either.
            "v1" => {
                let lowercase_hex = value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                match hex::decode(value) {
                    Ok(bytes) if lowercase_hex => v1.push(bytes),
                    _ => v1.push(Vec::new()),
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader)?;
    Ok(ParsedHeader { timestamp, v1 })
}

/// Computes the lowercase hex `v1` signature of `payload` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, payload))
}

/// Builds a complete header value, as Stripe sends it, for one secret.
pub fn header_for(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, payload))
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> [u8; 32] {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("BUG: HMAC accepts keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// Verifies `header` for `payload` at `now` (unix seconds).
///
/// A `tolerance_secs` of 0 still checks: only the current second passes.
pub fn verify(
    secrets: &Secrets,
    header: Option<&str>,
    payload: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let parsed = parse_header(header)?;
    if parsed.v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    let mut matched = subtle::Choice::from(0u8);
    for secret in &secrets.0 {
        let expected = mac(secret, parsed.timestamp, payload);
        for candidate in &parsed.v1 {
            // Lengths are public (always 32 for a real signature); the
            // contents are compared in constant time.
            if candidate.len() == expected.len() {
                matched |= candidate.as_slice().ct_eq(&expected);
            }
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::NoMatchingSignature);
    }
    let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    if parsed.timestamp < now.saturating_sub(tolerance)
        || parsed.timestamp > now.saturating_add(tolerance)
    {
        return Err(SignatureError::TimestampOutsideTolerance);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_that_stripe_would_not_issue_are_noticed() {
        let ok = Secrets::parse("whsec_abc123,whsec_Def456").unwrap();
        assert!(ok.all_look_like_stripe_secrets());
        for odd in ["whsec_...", "sk_test_abc", "whsec_", "whsec_abc,oops"] {
            assert!(
                !Secrets::parse(odd).unwrap().all_look_like_stripe_secrets(),
                "{odd}"
            );
        }
    }

    #[test]
    fn uppercase_hex_never_matches_as_in_stripes_libraries() {
        let secrets = Secrets::parse("whsec_x").unwrap();
        let good = sign("whsec_x", 1000, b"{}");
        let header = format!("t=1000,v1={}", good.to_uppercase());
        assert_eq!(
            verify(&secrets, Some(&header), b"{}", 1000, 300),
            Err(SignatureError::NoMatchingSignature)
        );
        let header = format!("t=1000,v1={good}");
        assert_eq!(verify(&secrets, Some(&header), b"{}", 1000, 300), Ok(()));
    }

    use super::*;

    fn secrets(list: &str) -> Secrets {
        Secrets::parse(list).unwrap()
    }

    const BODY: &[u8] = br#"{"id":"evt_1","type":"ping","created":1}"#;

    #[test]
    fn a_correct_signature_verifies() {
        let header = header_for("whsec_a", 1000, BODY);
        assert_eq!(
            verify(&secrets("whsec_a"), Some(&header), BODY, 1000, 300),
            Ok(())
        );
    }

    #[test]
    fn each_failure_names_its_cause() {
        let good = sign("whsec_a", 1000, BODY);
        let table: Vec<(Option<String>, i64, SignatureError)> = vec![
            (None, 1000, SignatureError::MissingHeader),
            (Some("".into()), 1000, SignatureError::MalformedHeader),
            (
                Some("garbage".into()),
                1000,
                SignatureError::MalformedHeader,
            ),
            (
                Some(format!("t=abc,v1={good}")),
                1000,
                SignatureError::MalformedHeader,
            ),
            (
                Some(format!("v1={good}")),
                1000,
                SignatureError::MalformedHeader,
            ),
            (Some("t=1000".into()), 1000, SignatureError::NoV1Signature),
            (
                Some(format!("t=1000,v0={good}")),
                1000,
                SignatureError::NoV1Signature,
            ),
            (
                Some(format!("t=1000,v2={good}")),
                1000,
                SignatureError::NoV1Signature,
            ),
            (
                Some("t=1000,v1=deadbeef".into()),
                1000,
                SignatureError::NoMatchingSignature,
            ),
            (
                Some("t=1000,v1=not-hex".into()),
                1000,
                SignatureError::NoMatchingSignature,
            ),
            (
                Some(format!("t=1001,v1={good}")),
                1000,
                SignatureError::NoMatchingSignature,
            ),
            (
                Some(format!("t=1000,v1={good}")),
                1301,
                SignatureError::TimestampOutsideTolerance,
            ),
            (
                Some(format!("t=1000,v1={good}")),
                699,
                SignatureError::TimestampOutsideTolerance,
            ),
        ];
        for (header, now, expected) in table {
            assert_eq!(
                verify(&secrets("whsec_a"), header.as_deref(), BODY, now, 300),
                Err(expected),
                "header {header:?} at {now}"
            );
        }
    }

    #[test]
    fn tolerance_edges_are_inclusive() {
        let header = header_for("whsec_a", 1000, BODY);
        assert_eq!(
            verify(&secrets("whsec_a"), Some(&header), BODY, 1300, 300),
            Ok(())
        );
        assert_eq!(
            verify(&secrets("whsec_a"), Some(&header), BODY, 700, 300),
            Ok(())
        );
    }

    #[test]
    fn zero_tolerance_still_checks_the_timestamp() {
        let header = header_for("whsec_a", 1000, BODY);
        assert_eq!(
            verify(&secrets("whsec_a"), Some(&header), BODY, 1000, 0),
            Ok(())
        );
        assert_eq!(
            verify(&secrets("whsec_a"), Some(&header), BODY, 1001, 0),
            Err(SignatureError::TimestampOutsideTolerance)
        );
    }

    #[test]
    fn any_v1_may_match_any_secret() {
        let old = sign("whsec_old", 1000, BODY);
        let new = sign("whsec_new", 1000, BODY);
        let both = format!("t=1000,v1={old},v1={new}");
        assert_eq!(
            verify(&secrets("whsec_new"), Some(&both), BODY, 1000, 300),
            Ok(())
        );
        assert_eq!(
            verify(&secrets("whsec_x, whsec_old"), Some(&both), BODY, 1000, 300),
            Ok(())
        );
        let only_new = format!("t=1000,v1={new}");
        assert_eq!(
            verify(&secrets("whsec_old"), Some(&only_new), BODY, 1000, 300),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_v0_signature_is_never_enough() {
        let good = sign("whsec_a", 1000, BODY);
        let header = format!("t=1000,v0={good},v1=00");
        assert_eq!(
            verify(&secrets("whsec_a"), Some(&header), BODY, 1000, 300),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    /// Stripe's own vector (stripe-dotnet's tests, Apache-2.0; see
    /// tests/fixtures/stripe/NOTICE.md).
    #[test]
    fn stripe_test_vector_verifies_within_tolerance_only() {
        let body = include_bytes!("../tests/fixtures/stripe/event_test_signature.json");
        assert_eq!(body.len(), 484);
        let t = 1_533_204_620;
        let header =
            format!("t={t},v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7");
        let s = secrets("webhook_secret");
        assert_eq!(verify(&s, Some(&header), body, t + 100, 300), Ok(()));
        assert_eq!(
            verify(&s, Some(&header), body, t + 400, 300),
            Err(SignatureError::TimestampOutsideTolerance)
        );
        assert_eq!(header, header_for("webhook_secret", t, body));
    }

    #[test]
    fn secrets_parse_skips_blanks_and_requires_one() {
        assert_eq!(secrets(" whsec_a , ,whsec_b").len(), 2);
        assert!(Secrets::parse(" , ").is_err());
        assert!(!format!("{:?}", secrets("whsec_secret")).contains("whsec_secret"));
    }
}
