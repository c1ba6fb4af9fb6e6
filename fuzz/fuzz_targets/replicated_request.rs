//! keel's replicated request decoder (what every member decodes from each log entry) never
//! panics, and whatever decodes survives a round trip: equal value, stable bytes.
#![no_main]

use keel::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        let bytes = request.encode().expect("a decoded request encodes");
        let again = Request::decode(&bytes).expect("an encoded request decodes");
        assert_eq!(again, request);
        assert_eq!(again.encode().expect("encodes"), bytes);
    }
});
