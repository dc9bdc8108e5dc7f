//! Arbitrary bytes as every message a peer can send: a request head and its arguments, a
//! response head and its payload, a `Value`, and a pickle from a CPython peer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manager_core::python::pickle;
use manager_core::value::Value;
use manager_core::wire::{decode_payload, Request, ResponseHead};

fuzz_target!(|data: &[u8]| {
    // Native request head (what `wire::take` does), then its arguments as a `Value`.
    if let Ok((head, rest)) = postcard::take_from_bytes::<Request<'_>>(data) {
        let bytes = postcard::to_stdvec(&head).expect("a decoded head encodes");
        let (again, tail) = postcard::take_from_bytes::<Request<'_>>(&bytes).expect("re-decodes");
        assert_eq!(head, again);
        assert!(tail.is_empty());
        let _ = decode_payload::<Value>(rest, "args");
    }

    // Native response head, then its payload.
    if let Ok((head, rest)) = postcard::take_from_bytes::<ResponseHead>(data) {
        let bytes = postcard::to_stdvec(&head).expect("a decoded head encodes");
        let again: ResponseHead = decode_payload(&bytes, "head").expect("re-decodes");
        assert_eq!(head, again);
        let _ = decode_payload::<Value>(rest, "payload");
    }

    // A whole payload as a `Value` (depth-limited): what it decodes to must encode, and
    // decode again to the same encoding.
    if let Ok(value) = decode_payload::<Value>(data, "value") {
        let bytes = postcard::to_stdvec(&value).expect("a decoded value encodes");
        let again: Value = decode_payload(&bytes, "value").expect("an encoded value decodes");
        let bytes2 = postcard::to_stdvec(&again).expect("encodes again");
        assert_eq!(bytes, bytes2);
    }

    // A pickle from a CPython peer: decoding only builds data. What decodes and encodes must
    // decode again.
    if let Ok(value) = pickle::decode(data) {
        if let Ok(bytes) = pickle::encode(&value) {
            pickle::decode(&bytes).expect("a pickle we wrote decodes");
        }
    }
});
