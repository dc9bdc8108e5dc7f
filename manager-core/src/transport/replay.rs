//! The frames a resumable session has sent and its peer has not acknowledged yet, to be sent
//! again on the session's next connection.
//!
//! Small frames (most replies and requests) are copied into one buffer rather than kept by
//! reference: a kept `Bytes` would keep the sender's frame buffer from being reused, and so
//! cost an allocation (two, with the buffer's shared header) per frame on both sides of every
//! call, where the copy of a few dozen bytes costs less. Larger frames are kept by reference,
//! so that a 1 MiB reply is not copied once more.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Frames up to this size are copied into the log's buffer; larger ones are kept by reference.
pub(crate) const COPY_AT_MOST: usize = 4096;

/// One frame of the log.
enum Kept {
    /// Its length; its bytes follow the earlier copied frames' in [`Replay::copied`].
    Copied(usize),
    Shared(Bytes),
}

impl Kept {
    fn len(&self) -> usize {
        match self {
            Kept::Copied(len) => *len,
            Kept::Shared(frame) => frame.len(),
        }
    }
}

/// The frames sent and not yet acknowledged by the peer, in order: a sequence, the peer
/// acknowledging how many it has received.
#[derive(Default)]
pub(crate) struct Replay {
    /// How many frames were sent in the session.
    sent: u64,
    /// The frames after the `sent - log.len()`th, in order.
    log: VecDeque<Kept>,
    /// The bytes of the copied frames of `log`, in order.
    copied: BytesMut,
    /// The bytes of every frame of `log`.
    bytes: usize,
}

impl Replay {
    /// Counts `frame` as sent, and keeps it until the peer acknowledges it: a copy of a small
    /// one, else the `Bytes` that `share` gives.
    pub(crate) fn keep(&mut self, frame: &[u8], share: impl FnOnce() -> Bytes) {
        self.sent += 1;
        self.bytes += frame.len();
        if frame.len() <= COPY_AT_MOST {
            self.copied.extend_from_slice(frame);
            self.log.push_back(Kept::Copied(frame.len()));
        } else {
            self.log.push_back(Kept::Shared(share()));
        }
    }

    /// Counts `n` frames sent without being kept (before the log began: a session's first
    /// hello, sent on the socket before it had an outbox).
    pub(crate) fn count_sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// The bytes of the frames kept.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets the frames up to the `received`th; an error if the peer claims more than was
    /// sent, or, when it is to be sent what follows (`resuming`), fewer than it acknowledged
    /// before (those frames are forgotten). An acknowledgement older than one before (sent
    /// again after a resume) says nothing new.
    /// The last large frame forgotten is returned, for its buffer to be used again once
    /// nobody else holds it (see `Outbox::acked`).
    pub(crate) fn forget(
        &mut self,
        received: u64,
        resuming: bool,
    ) -> Result<Option<Bytes>, String> {
        let first = self.sent - self.log.len() as u64;
        if received < first && !resuming {
            return Ok(None);
        }
        if received > self.sent || received < first {
            return Err(format!(
                "the peer says it received {received} frames; {first} to {} are known",
                self.sent
            ));
        }
        let mut last = None;
        for kept in self.log.drain(..(received - first) as usize) {
            self.bytes -= kept.len();
            match kept {
                Kept::Copied(len) => self.copied.advance(len),
                Kept::Shared(frame) => last = Some(frame),
            }
        }
        Ok(last)
    }

    /// The frames kept, in order, to send again.
    pub(crate) fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut at = 0;
        self.log.iter().map(move |kept| match kept {
            Kept::Copied(len) => {
                let frame = Bytes::copy_from_slice(&self.copied[at..at + len]);
                at += len;
                frame
            }
            Kept::Shared(frame) => frame.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firsts(replay: &Replay) -> Vec<u8> {
        replay.frames().map(|f| f[0]).collect()
    }

    /// Small and large frames come back whole and in order, after any acknowledgement.
    #[test]
    fn copied_and_shared_frames_replay_in_order() {
        let mut replay = Replay::default();
        let sizes = [3, COPY_AT_MOST + 1, 10, COPY_AT_MOST, 1];
        for (n, &size) in sizes.iter().enumerate() {
            let frame = Bytes::from(vec![n as u8; size]);
            replay.keep(&frame, || frame.clone());
        }
        assert_eq!(replay.bytes(), sizes.iter().sum::<usize>());
        // The large frame forgotten comes back, for its buffer to be used again.
        let forgotten = replay
            .forget(2, false)
            .unwrap()
            .expect("a large frame was forgotten");
        assert_eq!((forgotten[0], forgotten.len()), (1, COPY_AT_MOST + 1));
        assert_eq!(firsts(&replay), [2, 3, 4]);
        let lens: Vec<usize> = replay.frames().map(|f| f.len()).collect();
        assert_eq!(lens, [10, COPY_AT_MOST, 1]);
        assert!(replay.frames().all(|f| f.iter().all(|&b| b == f[0])));
        assert!(
            replay.forget(5, false).unwrap().is_none(),
            "only small frames were left"
        );
        assert_eq!(replay.bytes(), 0);
        assert_eq!(replay.frames().count(), 0);
        replay.keep(b"\x07new", || unreachable!("a small frame is copied"));
        assert_eq!(firsts(&replay), [7]);
    }
}
