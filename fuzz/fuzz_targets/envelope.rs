//! `parse_envelope` on arbitrary bytes; then `classify` and `content_hash` on
//! whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tollgate::event::{classify, parse_envelope};
use tollgate::ledger::content_hash;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = parse_envelope(data) else {
        return;
    };
    assert!(!envelope.id.is_empty() && !envelope.event_type.is_empty());
    // Either a domain event or a shape error; never a panic.
    let _ = classify(&envelope, "user_id");
    let hash = content_hash(&envelope);
    assert_eq!(hash.len(), 64);

    // Written out again, the event parses to the same envelope with the same
    // content hash: the ledger compares a delivered event with the same
    // event listed by the API through that hash.
    let rebuilt = json!({
        "id": envelope.id,
        "object": "event",
        "type": envelope.event_type,
        "created": envelope.created,
        "livemode": envelope.livemode,
        "api_version": envelope.api_version,
        "data": { "object": envelope.object },
    });
    let bytes = serde_json::to_vec(&rebuilt).expect("a Value serializes");
    let again = parse_envelope(&bytes).expect("a rebuilt envelope parses");
    assert_eq!(again, envelope);
    assert_eq!(content_hash(&again), hash);
});
