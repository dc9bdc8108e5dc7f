//! Arbitrary bytes, arriving in arbitrary chunks, through the server's frame decoder; every
//! frame it yields is then decoded as a request head, as the server does.
//!
//! Input: byte 0 picks the frame limit, byte 1 the chunk size, the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use manager_core::wire::{self, Request, FRAME_PREFIX};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // Small limits reach the "too long" path; 0 and the default are included.
    let max_frame = match data[0] % 8 {
        0 => 0,
        1 => 1,
        2 => 7,
        3 => 64,
        4 => 1024,
        5 => 65_536,
        _ => wire::DEFAULT_MAX_FRAME,
    };
    let chunk = usize::from(data[1]).max(1);
    let stream = &data[2..];

    let mut decoder = wire::frame_codec(max_frame);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize; // bytes of `stream` turned into frames (prefixes included)
    let mut fed = 0usize; // bytes of `stream` given to the decoder
    'feed: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max_frame, "frame over the limit");
                    // The frame is exactly the bytes after its prefix in the stream.
                    let prefix = &stream[consumed..consumed + FRAME_PREFIX];
                    let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
                    assert_eq!(len, frame.len());
                    let start = consumed + FRAME_PREFIX;
                    assert_eq!(&stream[start..start + len], &frame[..]);
                    consumed = start + len;
                    // As the server: a head, then (for calls and creates) the arguments.
                    if let Ok((head, rest)) = postcard::take_from_bytes::<Request<'_>>(&frame) {
                        assert!(rest.len() <= frame.len());
                        let _ = format!("{head:?}");
                    }
                }
                Ok(None) => break,
                Err(_) => break 'feed, // the connection would be closed
            }
        }
        // What is left is always the unconsumed tail of what was fed.
        assert_eq!(&buf[..], &stream[consumed..fed]);
    }
});
