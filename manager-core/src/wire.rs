//! The native wire format: length-prefixed frames carrying postcard-encoded messages.
//!
//! Every frame is a 4-byte big-endian length followed by that many bytes. A request frame holds a
//! postcard-encoded [`Request`] head, then (for calls and creates) the postcard-encoded arguments,
//! which run to the end of the frame. A response frame holds a [`ResponseHead`], then (for values
//! and raised errors) the postcard-encoded payload. Keeping the payload outside the head lets the
//! client encode arguments straight into the frame and the server decode them in place.

use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::error::{Error, RemoteError};

/// The largest frame accepted by default: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// The length of the frame prefix, in bytes.
pub const FRAME_PREFIX: usize = 4;

/// A decoder that splits a byte stream into frames, refusing any frame larger than
/// `max_frame` as soon as its length prefix arrives.
pub fn frame_codec(max_frame: usize) -> FrameDecoder {
    FrameDecoder { max_frame }
}

/// Splits a byte stream into frames (a 4-byte big-endian length, then the frame).
///
/// A frame of up to [`RESERVE_WHOLE_AT_MOST`] bytes gets room for all of it as soon as its
/// length prefix arrives, so that its bytes are read into place once, with no copy as the
/// buffer grows. That room is address space, not memory: pages the peer never fills are never
/// touched, so a peer that announces a frame and then stalls makes no more memory resident
/// than what it sent. A larger frame's buffer grows as its bytes come in (doubling), so that
/// an announced 64 MiB frame does not reserve 64 MiB of address space before it arrives.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

/// The largest frame whose whole room a [`FrameDecoder`] reserves when its prefix arrives.
pub const RESERVE_WHOLE_AT_MOST: usize = 8 << 20;

impl FrameDecoder {
    /// Makes room in `src` for the next read: what the frame in progress still needs when one
    /// is (as [`tokio_util::codec::Decoder::decode`] reserved it), else at least `chunk`
    /// bytes. Never more than that: a buffer grown past the frame in progress would be
    /// copied again as a whole.
    pub fn make_room(&self, src: &mut BytesMut, chunk: usize) {
        if src.len() >= FRAME_PREFIX {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            let missing = (FRAME_PREFIX + len).saturating_sub(src.len());
            if missing > 0 && len <= self.max_frame {
                src.reserve(Self::room_for(len, missing, src.len()));
                return;
            }
        }
        src.reserve(chunk);
    }

    /// The room to reserve for a frame of `len` bytes, `missing` of which have not arrived,
    /// `arrived` bytes being in the buffer.
    fn room_for(len: usize, missing: usize, arrived: usize) -> usize {
        if len <= RESERVE_WHOLE_AT_MOST {
            missing
        } else {
            // As much again as has arrived (at least 64 KiB): copied O(1) times per byte.
            missing.min(arrived.max(64 * 1024))
        }
    }
}

impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        if src.len() < FRAME_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "frame of {len} bytes exceeds the limit of {} bytes",
                    self.max_frame
                ),
            ));
        }
        if src.len() < FRAME_PREFIX + len {
            // See the type's documentation.
            let missing = FRAME_PREFIX + len - src.len();
            src.reserve(Self::room_for(len, missing, src.len()));
            return Ok(None);
        }
        let _ = src.split_to(FRAME_PREFIX);
        Ok(Some(src.split_to(len)))
    }
}

/// The version of this protocol; a client refuses a server that speaks another. (2: tokens
/// name the server run that issued them, and `Attach` carries the token's typeid and run. 3:
/// sessions outlive a broken connection: [`Request::Resume`], [`Request::Ack`], and the
/// welcome's `session_grace`; and stream methods: [`Reply::StreamOpened`],
/// [`Reply::StreamItem`], [`Reply::StreamEnd`], [`Request::StreamCredit`],
/// [`Request::StreamCancel`].)
pub const PROTOCOL_VERSION: u32 = 3;

/// How many items of one stream the server sends ahead of what its client has consumed: the
/// credit a stream opens with. The client grants more with [`Request::StreamCredit`] as it
/// consumes, so neither side ever holds more than this many items of one stream.
pub const STREAM_WINDOW: u32 = 64;

/// The first frame a server sends after a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// [`PROTOCOL_VERSION`] of the server.
    pub protocol: u32,
    /// The address the server names itself by in every [`Token`] it issues.
    pub address: Address,
    /// Why the server will not serve this connection (a limit reached), if it will not.
    pub refused: Option<String>,
    /// Where the server takes CPython clients, if it does.
    pub python_address: Option<Address>,
    /// How long the server lets a connection carry nothing before it drops it as vanished
    /// (`ServerConfig::liveness_timeout`): the client pings often enough.
    pub liveness: std::time::Duration,
    /// How long the server keeps the session of a connection that broke (not closed by either
    /// side) for its client to resume (`ServerConfig::session_grace`); zero when it does not.
    pub session_grace: std::time::Duration,
}

/// The head of a request frame sent by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Call `method` on `object`; the arguments follow the head.
    Call {
        /// Request id, echoed in the response.
        id: u64,
        /// The object's id.
        object: u64,
        /// The method's name.
        method: &'a str,
    },
    /// Create an object of `typeid`; the constructor's arguments follow the head.
    Create {
        /// Request id, echoed in the response.
        id: u64,
        /// The registered typeid.
        typeid: &'a str,
    },
    /// Add one reference to `object` held by this connection (a proxy was cloned). No response.
    IncRef {
        /// The object's id.
        object: u64,
    },
    /// Release one reference to `object` held by this connection (a proxy was dropped). No
    /// response.
    DecRef {
        /// The object's id.
        object: u64,
    },
    /// Stop the call with this request id, if it is still running (its caller gave up). No
    /// response of its own: a call it stops is answered with a `Cancelled` error, and one that
    /// had finished already has been answered with its result (which the client ignores, or
    /// undoes, as an abandoned acquisition's).
    Cancel {
        /// The request id of the call.
        id: u64,
    },
    /// Take a new reference to an object this connection may not hold yet (a proxy that came
    /// from another process). Answered with a proxy token, or refused when the object is not
    /// of `typeid` or the token was issued by another run of the server.
    Attach {
        /// Request id, echoed in the response.
        id: u64,
        /// The object's id.
        object: u64,
        /// The typeid the token names: the object must be of it.
        typeid: &'a str,
        /// The server run the token names ([`Token::instance`]); 0 when it is not known.
        instance: u64,
    },
    /// A request about the server itself.
    Control {
        /// Request id, echoed in the response.
        id: u64,
        /// What is asked.
        op: Control,
    },
    /// A [`Request::Call`] with the trace context of the client's span of it. Sent only to a
    /// server whose [`Hello`] lists [`features::TRACE_CONTEXT`]: a server that predates it
    /// would refuse the variant.
    TracedCall {
        /// Request id, echoed in the response.
        id: u64,
        /// The object's id.
        object: u64,
        /// The method's name.
        method: &'a str,
        /// The client's span of the call.
        trace: crate::trace::TraceContext,
    },
    /// The client has received `received` response frames of this session: the server may
    /// forget them (it keeps every frame it sent until the client says so, to send again what
    /// a broken connection lost). Answered with a [`ControlReply::Received`] of id 0, which
    /// says as much the other way.
    Ack {
        /// How many response frames the client has received in this session.
        received: u64,
    },
    /// Only as the first frame of a connection: resume the session `session` of a connection
    /// that broke, rather than start a new one. `proof` is [`crate::auth`]'s resume proof,
    /// which only the holder of that session's secret (made from the authkey at its first
    /// handshake) can compute for this connection's handshake. Answered, before anything else,
    /// with a [`ControlReply::Resumed`] of id 0, or an error of kind `SessionExpired`; then
    /// the server sends again the response frames after the `received`th, and the client the
    /// request frames after the one the answer names.
    Resume {
        /// The session's id.
        session: u64,
        /// The proof of holding the session's secret, bound to this connection's handshake.
        proof: [u8; 32],
        /// How many response frames of the session the client has received.
        received: u64,
    },
    /// The client consumed `n` items of the stream opened by request `id`: the server may send
    /// `n` more. No response. (Credit past [`STREAM_WINDOW`] items ahead is ignored.)
    StreamCredit {
        /// The request id of the call that opened the stream.
        id: u64,
        /// How many items were consumed since the last credit.
        n: u32,
    },
    /// The client dropped the stream opened by request `id`: the server stops its producer.
    /// No response (items already on their way are ignored by the client).
    StreamCancel {
        /// The request id of the call that opened the stream.
        id: u64,
    },
    /// A [`Request::Create`] from a client whose proxy stands for objects of the Rust type
    /// `object_type` (its `std::any::type_name`, from [`crate::Proxy::object_type`]): refused,
    /// with an error of kind `WrongType` naming both types, when the typeid makes objects of
    /// another type. Sent only to a server whose [`Hello`] lists [`features::CREATE_AS`].
    CreateAs {
        /// Request id, echoed in the response.
        id: u64,
        /// The registered typeid.
        typeid: &'a str,
        /// The type of the objects the client's proxy stands for.
        object_type: &'a str,
    },
}

/// What a client and a server tell each other they understand beyond [`PROTOCOL_VERSION`].
///
/// A client sends it after the head of its first [`Control::Ping`], where a server that
/// predates it ignores it (trailing bytes after a control head are not read) and answers
/// [`ControlReply::Pong`]; a server that knows it answers [`ControlReply::Hello`] with its own.
/// So peers of one protocol version with and without a feature keep working together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hello {
    /// A bit set of [`features`].
    pub features: u64,
}

/// The bits of [`Hello::features`].
pub mod features {
    /// Calls may be sent as [`super::Request::TracedCall`].
    pub const TRACE_CONTEXT: u64 = 1;
    /// The server answers [`super::Control::Describe`].
    pub const DESCRIBE: u64 = 2;
    /// Creates may be sent as [`super::Request::CreateAs`].
    pub const CREATE_AS: u64 = 4;
    /// The server makes and tracks shared memory blocks ([`super::Control::CreateSegment`]
    /// and the requests after it).
    pub const SEGMENTS: u64 = 8;
    /// Every feature this side knows, as the hello on the connection says it.
    pub const ALL: u64 = TRACE_CONTEXT | DESCRIBE | CREATE_AS | SEGMENTS;
    /// Requests and replies may travel in shared memory (same host, Unix socket). Never in
    /// [`ALL`]: a client asks for it in a hello sent as the connection's first frame, before
    /// anything else; a server that takes it answers with this bit set and then hands the
    /// memory over the socket (see `transport::shm`). A server that does not (an older one,
    /// or one with `ServerConfig::shared_memory` off) answers the hello as any other, and the
    /// connection goes on over the socket.
    pub const SHARED_MEMORY: u64 = 16;
}

/// Requests about the server rather than about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Answered with [`ControlReply::Pong`].
    Ping,
    /// How many objects the server holds.
    NumberOfObjects,
    /// Every object with its typeid and reference count, and the open connections.
    DebugInfo,
    /// Stop the server.
    Shutdown,
    /// The names of the methods exposed by `object`.
    Methods {
        /// The object's id.
        object: u64,
    },
    /// What each typeid is and offers. Sent only to a server whose [`Hello`] lists
    /// [`features::DESCRIBE`].
    Describe,
    /// Make a shared memory block of `size` bytes, tracked by this connection (see
    /// [`crate::shared_memory`]); answered with [`ControlReply::Segment`]. Sent only to a
    /// server whose [`Hello`] lists [`features::SEGMENTS`], as are the three below.
    CreateSegment {
        /// Its size in bytes (at least 1).
        size: u64,
    },
    /// Track the existing block `name` for this connection too (CPython's `track_segment`):
    /// answered with [`ControlReply::Tracked`].
    TrackSegment {
        /// The block's name, without a leading slash.
        name: String,
    },
    /// Stop tracking `name` for this connection (CPython's `release_segment`); the name is
    /// unlinked if no connection tracks it any more. Answered with [`ControlReply::Released`].
    ReleaseSegment {
        /// The block's name.
        name: String,
    },
    /// The names of every block the server tracks (CPython's `list_segments`), answered with
    /// [`ControlReply::Segments`].
    Segments,
}

/// The head of a response frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The id of the request this answers.
    pub id: u64,
    /// The answer.
    pub reply: Reply,
}

/// What a request produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The method returned a value; it follows the head.
    Value,
    /// The method returned `Err(e)`; `e` follows the head. `type_name` is the Rust type of `e`.
    Raised {
        /// The Rust type name of the error value.
        type_name: String,
    },
    /// The request produced a server-side object; the caller now holds one reference to it.
    Proxy(Token),
    /// The request failed.
    Error(RemoteError),
    /// The answer to a [`Control`] request.
    Control(ControlReply),
    /// The method returned a stream: its items follow as [`Reply::StreamItem`]s with this
    /// response's id, then one [`Reply::StreamEnd`]. The server sends at most `window` items
    /// ahead of the credit the client grants ([`Request::StreamCredit`]).
    StreamOpened {
        /// The initial credit, in items ([`STREAM_WINDOW`]).
        window: u32,
    },
    /// One item of a stream; it follows the head, encoded as a method's value is.
    StreamItem,
    /// The stream ended: its producer ran out (`None`) or failed (the error is the stream's
    /// last item). Nothing of the stream follows.
    StreamEnd {
        /// Why the producer stopped, if it failed (an error it returned, or a panic).
        error: Option<RemoteError>,
    },
}

/// The answer to a [`Control`] request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlReply {
    /// The answer to [`Control::Ping`].
    Pong,
    /// The answer to [`Control::NumberOfObjects`].
    NumberOfObjects(u64),
    /// The answer to [`Control::DebugInfo`].
    DebugInfo(DebugInfo),
    /// The answer to [`Control::Shutdown`]: the server is stopping.
    ShuttingDown,
    /// The answer to [`Control::Methods`].
    Methods(Vec<String>),
    /// The answer to a [`Control::Ping`] that carried the client's [`Hello`]: the server's.
    Hello(Hello),
    /// The answer to [`Control::Describe`], sorted by typeid.
    Describe(Vec<crate::describe::TypeInfo>),
    /// The answer to [`Request::Ack`]: how many request frames of this session the server has
    /// read, which the client may forget.
    Received(u64),
    /// The answer to [`Request::Resume`]: the session is resumed, and the server has read this
    /// many of its request frames (the client sends again those after them).
    Resumed(u64),
    /// The answer to [`Control::CreateSegment`]: the new block's name.
    Segment(String),
    /// The answer to [`Control::TrackSegment`].
    Tracked,
    /// The answer to [`Control::ReleaseSegment`]: whether the name was unlinked (no other
    /// connection tracked it).
    Released {
        /// Whether the name is gone.
        unlinked: bool,
    },
    /// The answer to [`Control::Segments`], in the order they were first tracked.
    Segments(Vec<String>),
}

/// A snapshot of a server's objects and connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugInfo {
    /// Every live object, in id order.
    pub objects: Vec<ObjectInfo>,
    /// How many client connections are open.
    pub connections: u64,
    /// The server's address.
    pub address: Address,
    /// The method calls running now, oldest first.
    pub running: Vec<RunningCall>,
    /// Per typeid and method: how many calls finished, how many failed, and their total time.
    pub methods: Vec<MethodStats>,
}

/// A method call running on a server, as [`DebugInfo`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningCall {
    /// The typeid of the object called.
    pub typeid: String,
    /// The method.
    pub method: String,
    /// The object's id.
    pub object: u64,
    /// The id of the connection that made the call.
    pub connection: u64,
    /// Whether the method is an `async fn` (which may wait for long without holding a thread).
    pub is_async: bool,
    /// How long it has run (including any wait for its object's lock or a worker thread).
    pub elapsed: std::time::Duration,
}

/// What a server has counted of one method of one typeid, as [`DebugInfo`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodStats {
    /// The typeid.
    pub typeid: String,
    /// The method.
    pub method: String,
    /// How many calls finished (or were cancelled).
    pub calls: u64,
    /// How many of them failed: an error, a panic, or a typed error the method returned.
    pub errors: u64,
    /// Their total time, from the request being read to the reply being made.
    pub total: std::time::Duration,
}

/// One live object on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The object's id.
    pub id: u64,
    /// The typeid it was registered under.
    pub typeid: String,
    /// The Rust type of the referent.
    pub type_name: String,
    /// How many references clients hold (a shared instance also counts the server's own).
    pub refcount: u64,
}

/// Names one object on one server: its typeid, the server's address, the object's id, and the
/// run of the server that issued it.
///
/// A proxy is a token plus a connection. Tokens travel inside `Reply::Proxy` and are what a
/// proxy turns into when it is passed to another process. Object ids start again with every
/// run of a server, so an id alone could name another client's object after a restart: the
/// `instance` tells the runs apart, and a server refuses a token of an earlier run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token {
    /// The typeid the object was registered under.
    pub typeid: String,
    /// The address of the server that owns it.
    pub address: Address,
    /// The object's id on that server.
    pub id: u64,
    /// The run of the server that issued the token: a random number each server picks when it
    /// binds. 0 when it is not known (a token from a CPython client, whose tokens have no such
    /// field); such a token is checked by its typeid only.
    #[serde(default)]
    pub instance: u64,
}

/// A frame under construction: the length prefix is reserved, then filled in by [`finish`].
pub(crate) fn start_frame(capacity: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(FRAME_PREFIX + capacity);
    buf.put_u32(0);
    buf
}

/// Starts a frame in `buf`, an empty buffer kept from an earlier frame.
pub(crate) fn restart_frame(buf: &mut BytesMut) {
    buf.put_u32(0);
}

/// Appends `value` to `buf` in postcard form.
pub(crate) fn put<T: Serialize + ?Sized>(
    buf: &mut BytesMut,
    value: &T,
    what: &str,
) -> Result<(), Error> {
    // Sized first: a large value (a block of bytes, a long list) is then written into one
    // allocation of the right size, rather than into a buffer that doubles, copying and
    // touching fresh memory at each step; for a small one the extra pass is cheap.
    let size = size_of(value, what)?;
    put_sized(buf, value, size, what)
}

/// The bytes of `value` in postcard form.
pub(crate) fn size_of<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<usize, Error> {
    postcard::experimental::serialized_size(value).map_err(|e| Error::encode(what, e))
}

/// [`put`], for a value whose size [`size_of`] gave already.
pub(crate) fn put_sized<T: Serialize + ?Sized>(
    buf: &mut BytesMut,
    value: &T,
    size: usize,
    what: &str,
) -> Result<(), Error> {
    buf.reserve(size);
    let mut writer = buf.writer();
    postcard::to_io(value, &mut writer).map_err(|e| Error::encode(what, e))?;
    writer.flush()?;
    Ok(())
}

/// Fills in the length prefix of a frame made by [`start_frame`] and returns it ready to send.
pub(crate) fn finish(buf: BytesMut, max_frame: usize) -> Result<Bytes, Error> {
    finish_buffer(buf, max_frame).map(BytesMut::freeze)
}

/// [`finish`], leaving the frame in its buffer (for `Outbox::send_buffer`).
pub(crate) fn finish_buffer(mut buf: BytesMut, max_frame: usize) -> Result<BytesMut, Error> {
    let len = buf.len() - FRAME_PREFIX;
    if len > max_frame {
        return Err(Error::Protocol(format!(
            "frame of {len} bytes exceeds the limit of {max_frame} bytes"
        )));
    }
    buf[..FRAME_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Where the value of a reply frame (`head`, its first bytes; `len`, its whole length) starts
/// as a byte string running to the frame's end, when it is one: a [`Reply::Value`] whose
/// payload is a postcard varint and that many bytes (a `Vec<u8>` a method returned). A guess
/// from the bytes, for a shared-memory reader that copies such a string out into a buffer of
/// its own (`transport::shm::bulk`); a payload of another type that happens to look so is
/// put back together whole.
pub(crate) fn value_string_start(head: &[u8], len: usize) -> Option<usize> {
    let (response, payload) = take::<ResponseHead>(head, "response").ok()?;
    if response.reply != Reply::Value {
        return None;
    }
    crate::transport::shm::bulk::byte_string_after(head, head.len() - payload.len(), len)
}

/// Decodes a message head from the front of `body`, returning it and the bytes after it.
pub(crate) fn take<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    what: &str,
) -> Result<(T, &'a [u8]), Error> {
    postcard::take_from_bytes(body).map_err(|e| Error::decode(what, e))
}

/// Decodes a whole payload, refusing trailing bytes.
pub fn decode_payload<'a, T: Deserialize<'a>>(payload: &'a [u8], what: &str) -> Result<T, Error> {
    let (value, rest) = take(payload, what)?;
    if !rest.is_empty() {
        return Err(Error::decode(
            what,
            format!("{} bytes left over after the value", rest.len()),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_trailing_args() {
        let mut buf = start_frame(32);
        put(
            &mut buf,
            &Request::Call {
                id: 7,
                object: 3,
                method: "get_x",
            },
            "head",
        )
        .unwrap();
        put(&mut buf, &(1u32, "two"), "args").unwrap();
        let frame = finish(buf, DEFAULT_MAX_FRAME).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let (head, rest): (Request<'_>, _) = take(&frame[4..], "head").unwrap();
        assert_eq!(
            head,
            Request::Call {
                id: 7,
                object: 3,
                method: "get_x"
            }
        );
        let args: (u32, String) = decode_payload(rest, "args").unwrap();
        assert_eq!(args, (1, "two".to_string()));
    }

    #[test]
    fn oversized_frame_is_refused() {
        let mut buf = start_frame(16);
        buf.put_slice(&[0u8; 16]);
        assert!(finish(buf, 8).is_err());
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(take::<Request<'_>>(&[0xff, 0xff, 0xff], "head").is_err());
        assert!(decode_payload::<u8>(&[1, 2], "payload").is_err());
    }
}
