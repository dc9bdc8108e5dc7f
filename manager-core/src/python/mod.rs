//! Building blocks for talking to CPython's `multiprocessing.managers` peers.
//!
//! CPython managers speak `multiprocessing.connection`: length-prefixed frames, an HMAC
//! challenge in each direction, then pickled messages (`(ident, methodname, args, kwds)`
//! requests and `(kind, payload)` replies). This module has the two halves a Rust peer needs:
//!
//! - [`pickle`]: a pickle codec for the subset manager traffic uses. Decoding only ever builds
//!   data ([`PyValue`]): globals outside a short allow-list are refused, nothing is imported or
//!   called. Encoding writes protocol 4, including the `Token`s, proxies and exceptions a
//!   server must send.
//! - [`connection`]: the framing (4-byte and 12-byte headers, with a size limit checked before
//!   anything is allocated) and both handshakes (`{sha256}` of CPython 3.12+, raw HMAC-MD5 of
//!   3.11 and older), in both roles, over any tokio stream; [`PyConnection`] ties them together.
//!
//! Neither knows about the server: dispatching requests into shared objects is done on top.

pub mod client;
pub mod connection;
pub mod pickle;
pub mod repr;
mod tree;

pub use connection::{Digest, HandshakeInfo, PyConnection};
pub use pickle::{
    decode, decode_with, encode, encode_with, DecodeOptions, EncodeOptions, PickleError,
    PyException, PyObject, PyProxy, PyValue,
};
