//! `--initial-cluster` parsing never panics, and what parses prints back to an equal value.
#![no_main]

use keel_membership::InitialCluster;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(parsed) = InitialCluster::parse(text) {
            let again = InitialCluster::parse(&parsed.to_string());
            assert_eq!(again.ok(), Some(parsed));
        }
    }
});
