//! Decoders of keel-storage never panic, and whatever decodes re-encodes to the same bytes.
#![no_main]

use keel_storage::codec::{parse_history_key, parse_revs_key, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()).ok(), Some(record));
    }
    if let Ok((key, rev)) = parse_history_key(data) {
        assert_eq!(keel_storage::codec::history_key(&key, rev), data);
    }
    let _ = parse_revs_key(data);
});
