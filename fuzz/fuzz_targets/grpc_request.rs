//! The gRPC request conversion (etcd wire request -> keel request, what every KV call goes
//! through): raw bytes decoded as a txn, range, put, delete or compare (the first byte picks
//! which) convert without panicking, exactly when etcd's own checks accept them, and keep
//! what they ask for (`keel_server::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = keel_server::fuzzing::check_encoded(data) {
        panic!("{e}");
    }
});
