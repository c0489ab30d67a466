//! `Stripe-Signature` parsing and verification, and the `header_for` round trip.
//!
//! Input: `now` (8 bytes, i64 LE), `tolerance` (8 bytes, u64 LE), a signing
//! time `t` (8 bytes, i64 LE), then the header up to the first `\n` and the
//! body after it. Without a `\n` there is no header at all and everything
//! left is the body. Missing bytes read as zero.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use tollgate::signature::{header_for, verify, Secrets, SignatureError};

const PRIMARY: &str = "whsec_fuzz_primary";
const PREVIOUS: &str = "whsec_fuzz_previous";

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let now: i64 = u.arbitrary().unwrap_or_default();
    let tolerance: u64 = u.arbitrary().unwrap_or_default();
    let t: i64 = u.arbitrary().unwrap_or_default();
    let rest = u.take_rest();
    let (header, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (
            Some(String::from_utf8_lossy(&rest[..i]).into_owned()),
            &rest[i + 1..],
        ),
        None => (None, rest),
    };

    // Rotation: both secrets are configured.
    let both = Secrets::parse(&format!("{PRIMARY}, {PREVIOUS}")).expect("two secrets");
    let primary_only = Secrets::parse(PRIMARY).expect("one secret");

    // Whatever the header says, verification answers without panicking, and
    // a missing header is always reported as such.
    let fuzzed = verify(&both, header.as_deref(), body, now, tolerance);
    if header.is_none() {
        assert_eq!(fuzzed, Err(SignatureError::MissingHeader));
    }

    // Round trip: a header made for this body verifies at its own time,
    // whatever the tolerance, with either secret while both are configured.
    let good = header_for(PRIMARY, t, body);
    assert_eq!(verify(&both, Some(&good), body, t, tolerance), Ok(()));
    let old = header_for(PREVIOUS, t, body);
    assert_eq!(verify(&both, Some(&old), body, t, tolerance), Ok(()));
    // A retired secret's signature no longer matches.
    assert_eq!(
        verify(&primary_only, Some(&old), body, t, tolerance),
        Err(SignatureError::NoMatchingSignature)
    );

    // At any other time only the tolerance can refuse a good signature, and
    // it refuses exactly outside [t - tolerance, t + tolerance]. Tolerances
    // above i64::MAX seconds are clamped to it by `verify`; for those only
    // the kind of refusal is checked.
    let at_now = verify(&both, Some(&good), body, now, tolerance);
    match i64::try_from(tolerance) {
        Ok(tol) => {
            let within = (i128::from(now) - i128::from(t)).abs() <= i128::from(tol);
            let expected = if within {
                Ok(())
            } else {
                Err(SignatureError::TimestampOutsideTolerance)
            };
            assert_eq!(at_now, expected, "t={t} now={now} tolerance={tolerance}");
        }
        Err(_) => assert!(
            matches!(
                at_now,
                Ok(()) | Err(SignatureError::TimestampOutsideTolerance)
            ),
            "{at_now:?}"
        ),
    }

    // Any change to the body breaks the signature, never the parse.
    let mut tampered = body.to_vec();
    match tampered.last_mut() {
        Some(b) => *b ^= 1,
        None => tampered.push(b'{'),
    }
    assert_eq!(
        verify(&both, Some(&good), &tampered, t, tolerance),
        Err(SignatureError::NoMatchingSignature)
    );
});
