//! A shared-memory ring and its arena as the server reads them, with the client playing every
//! trick: the input is a sequence of operations, each a hostile producer's (publish any head
//! index, write any bytes anywhere in the ring's data or the arena's, descriptors of blocks
//! included) or the server's (read at most so many bytes and decode the frames they complete,
//! as its reader thread does, blocks of the arena whole; write replies, large ones through
//! the arena, while the hostile consumer publishes any tail and any count of blocks taken).
//! The ring must report a fault or deliver bytes, never panic, never hand out more than the
//! ring and one block hold, and every frame it yields is decoded as a request head. Half the
//! runs read as a client does, the byte string that ends a large frame copied out apart: each
//! such string is claimed by its own frame, which its varint ends.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use manager_core::__private::TestRing;
use manager_core::wire::{self, Request};
use tokio_util::codec::Decoder;

/// The next `len` bytes of `ops` (fewer if there are not as many), taken off it.
fn take_bytes<'a>(ops: &mut &'a [u8], len: u64) -> &'a [u8] {
    let n = (len as usize).min(ops.len());
    let (bytes, after) = ops.split_at(n);
    *ops = after;
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, mut ops)) = data.split_first() else {
        return;
    };
    let ring = TestRing::new(16 << (size % 8));
    // Half the runs read as a client does, the byte string that ends a large frame apart.
    if size & 0x80 != 0 {
        ring.detach_trailing_strings();
    }
    let mut decoder = wire::frame_codec(1 << (size % 20));
    let mut inbox = BytesMut::new();
    let word = |bytes: &[u8]| {
        let mut buf = [0u8; 8];
        let n = bytes.len().min(8);
        buf[..n].copy_from_slice(&bytes[..n]);
        u64::from_le_bytes(buf)
    };
    while let Some((&op, rest)) = ops.split_first() {
        let take = rest.len().min(8);
        let (arg, after) = rest.split_at(take);
        ops = after;
        match op % 7 {
            0 => ring.set_head(word(arg)),
            1 => {
                let bytes = take_bytes(&mut ops, word(arg) % 64);
                ring.scribble(word(arg).rotate_left(17), bytes, word(arg) as u32);
            }
            2 => {
                let max = (word(arg) % 4096) as usize + 1;
                let before = inbox.len();
                match ring.read_frames(&mut inbox, max) {
                    Ok(n) => {
                        // What the ring holds, and one block of the arena (as large).
                        assert!(n <= 2 * ring.capacity() + 4);
                        assert_eq!(inbox.len(), before + n);
                    }
                    // A fault ends the connection: nothing more is read.
                    Err(_) => return,
                }
                loop {
                    match decoder.decode(&mut inbox) {
                        Ok(Some(frame)) => {
                            let _ = postcard::take_from_bytes::<Request<'_>>(&frame);
                            // A string apart is the rest of its frame, as its varint says.
                            if let Some(tail) = ring.claim(&frame) {
                                let (len, rest) = postcard::take_from_bytes::<u64>(&frame)
                                    .expect("a frame shortened at its varint");
                                assert!(rest.is_empty() && len == tail.len() as u64);
                                assert!(!tail.is_empty());
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
            3 => ring.set_tail(word(arg)),
            4 => ring.set_taken(word(arg)),
            5 => {
                let bytes = take_bytes(&mut ops, word(arg) % 64);
                ring.scribble_arena(word(arg).rotate_left(29) as usize, bytes);
            }
            _ => {
                let bytes = take_bytes(&mut ops, word(arg) % 256);
                match ring.write_frames(bytes) {
                    Ok(written) => assert!(written <= bytes.len()),
                    Err(_) => return,
                }
            }
        }
    }
});
