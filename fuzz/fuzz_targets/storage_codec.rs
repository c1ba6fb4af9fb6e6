//! Decoders of keel-storage never panic, and whatever decodes re-encodes to the same bytes.
#![no_main]

use keel_storage::codec::{parse_history_key, parse_revs_entry, push_revs_key, revs_key, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()).ok(), Some(record));
    }
    if let Ok((key, rev)) = parse_history_key(data) {
        assert_eq!(keel_storage::codec::history_key(&key, rev), data);
    }
    // a revision entry's value: whatever parses re-encodes to the same bytes
    if let Ok((rev, changes)) = parse_revs_entry(&revs_key(keel_types::Revision::new(7)), data) {
        assert_eq!(rev.get(), 7);
        let mut out = Vec::new();
        for (i, (sub, key)) in changes.iter().enumerate() {
            assert_eq!(*sub as usize, i);
            push_revs_key(key, &mut out);
        }
        assert_eq!(out, data);
    }
    let _ = parse_revs_entry(data, data);
});
