//! Frames on a connection's thread, with no allocation per message for what CPython clients
//! send and receive most: a request is decoded where the read left it (the reader's buffer),
//! and a reply is pickled after its header in a buffer the thread keeps, then written whole.

use std::io::{BufRead, BufReader, Read};

use crate::error::Error;
use crate::python::connection::{eof, frame_length_blocking, read_payload_blocking};
use crate::python::pickle::{self, PyValue};

/// A reply buffer that grew past this is given back once the reply is written.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Where [`read_frame`] left a frame's payload.
pub(super) enum Payload {
    /// The first `len` bytes of the reader's buffer ([`Payload::bytes`]), consumed with
    /// [`Payload::consume`] once decoded.
    Buffered(usize),
    /// Read out of the reader: more than its buffer held.
    Owned(Vec<u8>),
}

impl Payload {
    /// The payload's bytes.
    pub(super) fn bytes<'a, R>(&'a self, reader: &'a BufReader<R>) -> &'a [u8] {
        match self {
            Payload::Buffered(len) => &reader.buffer()[..*len],
            Payload::Owned(bytes) => bytes,
        }
    }

    /// Takes a buffered payload out of the reader's buffer.
    pub(super) fn consume<R: Read>(self, reader: &mut BufReader<R>) {
        if let Payload::Buffered(len) = self {
            reader.consume(len);
        }
    }
}

/// Reads one frame: `Ok(None)` at a clean end of stream (between frames). `on_header` is
/// called with the payload's length once the header is read. The announced length is checked
/// against `max` before anything is allocated, and a payload that is not in the buffer yet
/// grows its vector only as bytes arrive.
pub(super) fn read_frame<R: Read>(
    reader: &mut BufReader<R>,
    max: usize,
    on_header: impl FnOnce(usize),
) -> Result<Option<Payload>, Error> {
    loop {
        match reader.fill_buf() {
            Ok([]) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let mut header = [0u8; 4];
    reader
        .read_exact(&mut header)
        .map_err(|e| eof(e, "a frame header"))?;
    let len = frame_length_blocking(reader, header, max)?;
    on_header(len);
    if len == 0 {
        return Ok(Some(Payload::Buffered(0)));
    }
    let buffered = loop {
        match reader.fill_buf() {
            Ok(buffer) => break buffer.len(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if buffered >= len {
        return Ok(Some(Payload::Buffered(len)));
    }
    read_payload_blocking(reader, len).map(|payload| Some(Payload::Owned(payload)))
}

/// A reply's frame, pickled into a buffer kept from reply to reply.
#[derive(Default)]
pub(super) struct ReplyBuffer(Vec<u8>);

impl ReplyBuffer {
    /// The frame of `reply` (header and pickle, as CPython writes a frame: one write), valid
    /// until the next call.
    pub(super) fn frame(&mut self, reply: &PyValue) -> Result<&[u8], Error> {
        if self.0.capacity() > KEEP_CAPACITY {
            self.0 = Vec::new();
        }
        let out = &mut self.0;
        out.clear();
        out.extend_from_slice(&[0; 4]);
        pickle::encode_into(reply, &pickle::EncodeOptions::default(), out)
            .map_err(|e| Error::encode("a pickled message", e))?;
        let len = out.len() - 4;
        match i32::try_from(len) {
            Ok(short) => out[..4].copy_from_slice(&short.to_be_bytes()),
            Err(_) => {
                // Past 2 GiB: `-1` then the 8-byte length (CPython 3.8+ reads it).
                let mut long = (-1i32).to_be_bytes().to_vec();
                long.extend_from_slice(&(len as u64).to_be_bytes());
                out.splice(..4, long);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn frames_are_read_in_place_or_out_of_the_buffer() {
        let mut stream = frame(b"abc");
        stream.extend(frame(b""));
        stream.extend(frame(&[7; 100]));
        let mut reader = BufReader::with_capacity(16, Cursor::new(stream));
        let first = read_frame(&mut reader, 1 << 20, |len| assert_eq!(len, 3))
            .unwrap()
            .unwrap();
        assert!(matches!(first, Payload::Buffered(3)));
        assert_eq!(first.bytes(&reader), b"abc");
        first.consume(&mut reader);
        let empty = read_frame(&mut reader, 1 << 20, |_| {}).unwrap().unwrap();
        assert_eq!(empty.bytes(&reader), b"");
        empty.consume(&mut reader);
        // Larger than the buffer: read out of it.
        let big = read_frame(&mut reader, 1 << 20, |_| {}).unwrap().unwrap();
        assert!(matches!(big, Payload::Owned(_)));
        assert_eq!(big.bytes(&reader), &[7; 100][..]);
        big.consume(&mut reader);
        assert!(read_frame(&mut reader, 1 << 20, |_| {}).unwrap().is_none());
    }

    #[test]
    fn a_frame_past_the_limit_or_cut_short_is_an_error() {
        let mut reader = BufReader::new(Cursor::new(frame(&[1; 10])));
        assert!(matches!(
            read_frame(&mut reader, 5, |_| {}),
            Err(Error::Protocol(_))
        ));
        let mut cut = frame(&[1; 10]);
        cut.truncate(8);
        let mut reader = BufReader::with_capacity(4, Cursor::new(cut));
        assert!(matches!(
            read_frame(&mut reader, 100, |_| {}),
            Err(Error::ConnectionClosed(_))
        ));
        let mut reader = BufReader::new(Cursor::new(vec![0, 0]));
        assert!(matches!(
            read_frame(&mut reader, 100, |_| {}),
            Err(Error::ConnectionClosed(_))
        ));
    }

    #[test]
    fn a_reply_is_its_header_then_its_pickle() {
        let mut buffer = ReplyBuffer::default();
        let reply = PyValue::Tuple(vec![PyValue::str("#RETURN"), PyValue::Int(3)]);
        let pickled = pickle::encode(&reply).unwrap();
        assert_eq!(buffer.frame(&reply).unwrap(), frame(&pickled));
        // Reused: the same bytes again, nothing left of the first.
        assert_eq!(buffer.frame(&reply).unwrap(), frame(&pickled));
    }
}
