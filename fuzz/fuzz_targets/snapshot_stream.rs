//! A snapshot stream cut into arbitrary chunks is verified without panicking, and installing
//! it into an in-memory engine fails exactly when verification fails.
#![no_main]

use keel_storage::engine::{Engine, MemEngine};
use keel_storage::snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // split the input into chunks at 0xfe bytes
    let chunks: Vec<Vec<u8>> = data.split(|b| *b == 0xfe).map(<[u8]>::to_vec).collect();
    let verified = snapshot::verify(chunks.iter().cloned().map(Ok));
    let engine = MemEngine::new(&["meta", "a"]);
    let installed = snapshot::install(&engine, chunks.into_iter().map(Ok));
    assert_eq!(verified.is_ok(), installed.is_ok());
    let _ = engine.check_healthy();
});
