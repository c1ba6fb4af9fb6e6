//! The decoders of member-to-member messages and replies (bytes from the peer port) never
//! panic, and whatever decodes re-encodes to bytes that decode to the same encoding.
#![no_main]

use keel::{PeerMessage, PeerReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = PeerMessage::from_bytes(data) {
        let bytes = message.to_bytes().expect("a decoded message encodes");
        let again = PeerMessage::from_bytes(&bytes).expect("an encoded message decodes");
        assert_eq!(again.to_bytes().expect("encodes"), bytes);
    }
    if let Ok(reply) = PeerReply::from_bytes(data) {
        let bytes = reply.to_bytes().expect("a decoded reply encodes");
        let again = PeerReply::from_bytes(&bytes).expect("an encoded reply decodes");
        assert_eq!(again.to_bytes().expect("encodes"), bytes);
    }
});
