//! Encoding replies, and what happens when one cannot be encoded.

use bytes::BytesMut;

use super::connection::Connection;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::transport::shm::bulk::BULK_AT_LEAST;
use crate::wire::{self, Reply, ResponseHead};

impl Connection {
    pub(super) fn send_error(&self, error: RemoteError, id: u64) {
        self.send(id, Reply::Error(error));
    }

    pub(super) fn send(&self, id: u64, reply: Reply) {
        self.send_reply(id, Finished::Reply(reply), ("", ""));
    }

    /// Encodes and queues a reply. `(typeid, method)` names the call, for errors.
    pub(super) fn send_reply(&self, id: u64, finished: Finished, (typeid, method): (&str, &str)) {
        let max_frame = self.state.config.max_frame;
        let (finished, sized) = match self.send_direct(id, finished) {
            Direct::Sent => return,
            Direct::NotSent(finished, sized) => (finished, sized),
        };
        let frame = match encode_response(
            self.outbox.frame_buffer(),
            id,
            finished,
            sized,
            max_frame,
        ) {
            Ok(frame) => frame,
            Err(failed) => {
                // The reply could not be encoded (or is too large): tell the caller why, and
                // release the object a proxy reply would have handed over.
                if let Some(object) = failed.proxy {
                    self.decref(object);
                }
                let mut message = failed.error.to_string();
                let mut error =
                    RemoteError::new(RemoteErrorKind::Encode, typeid, method, message.clone());
                loop {
                    match encode_response(
                        wire::start_frame(64),
                        id,
                        Finished::Reply(Reply::Error(error.clone())),
                        None,
                        max_frame,
                    ) {
                        Ok(frame) => break frame,
                        Err(_) if !message.is_empty() => {
                            // Even the error does not fit the frame limit: shorten it.
                            message.truncate(message.len() / 2);
                            while !message.is_char_boundary(message.len()) {
                                message.pop();
                            }
                            error.message = message.clone();
                            error.typeid.clear();
                            error.method.clear();
                        }
                        Err(_) => {
                            // Nothing fits: close the connection so the caller does not wait
                            // for an answer that cannot come.
                            tracing::warn!("a reply does not fit the frame limit of {max_frame} bytes; closing the connection");
                            self.closed.cancel();
                            return;
                        }
                    }
                }
            }
        };
        // A closed connection is going away; its references are released.
        self.outbox.send_buffer(frame);
    }

    /// Through shared memory, a reply with a large payload is serialized straight into a
    /// block of the reply arena (`Outbox::send_direct`), rather than into a buffer that is then
    /// copied there: one copy of the value fewer. Gives the reply back, with its payload's size
    /// once known, when it goes the usual way.
    fn send_direct(&self, id: u64, finished: Finished) -> Direct {
        if !self.outbox.is_ring() {
            return Direct::NotSent(finished, None);
        }
        let Finished::Payload(reply, payload) = &finished else {
            return Direct::NotSent(finished, None);
        };
        let value: &dyn erased_serde::Serialize = &**payload;
        let Ok(size) = wire::size_of(value, "the method's result") else {
            return Direct::NotSent(finished, None);
        };
        if size < BULK_AT_LEAST {
            return Direct::NotSent(finished, Some(size));
        }
        let head = ResponseHead {
            id,
            reply: reply.clone(),
        };
        let Ok(head_size) = wire::size_of(&head, "response") else {
            return Direct::NotSent(finished, Some(size));
        };
        let len = head_size + size;
        let sent = len <= self.state.config.max_frame
            && self.outbox.send_direct(len, &mut |block| {
                block.serialize(&head)?;
                block.serialize(value)
            });
        match sent {
            true => Direct::Sent,
            false => Direct::NotSent(finished, Some(size)),
        }
    }
}

/// What [`Connection::send_direct`] did with a reply.
enum Direct {
    Sent,
    /// Not sent: the reply, and its payload's size when it was measured.
    NotSent(Finished, Option<usize>),
}

/// A reply, with the payload that follows its head when there is one.
pub(super) enum Finished {
    Reply(Reply),
    Payload(Reply, Box<dyn crate::object::ReturnValue>),
}

/// A reply that could not be encoded.
pub(super) struct EncodeFailed {
    /// The object a proxy reply was handing over, to be released.
    proxy: Option<u64>,
    pub(super) error: Error,
}

/// Encodes a reply into `buf`; `sized`: its payload's size, when it was measured already.
pub(super) fn encode_response(
    mut buf: BytesMut,
    id: u64,
    finished: Finished,
    sized: Option<usize>,
    max_frame: usize,
) -> Result<BytesMut, Box<EncodeFailed>> {
    let (reply, payload) = match finished {
        Finished::Reply(reply) => (reply, None),
        Finished::Payload(reply, payload) => (reply, Some(payload)),
    };
    let proxy = match &reply {
        Reply::Proxy(token) => Some(token.id),
        _ => None,
    };
    let failed = |error| Box::new(EncodeFailed { proxy, error });
    wire::put(&mut buf, &ResponseHead { id, reply }, "response").map_err(failed)?;
    if let Some(payload) = payload {
        let value: &dyn erased_serde::Serialize = &*payload;
        let what = "the method's result";
        match sized {
            Some(size) => wire::put_sized(&mut buf, value, size, what),
            None => wire::put(&mut buf, value, what),
        }
        .map_err(failed)?;
    }
    wire::finish_buffer(buf, max_frame).map_err(failed)
}
