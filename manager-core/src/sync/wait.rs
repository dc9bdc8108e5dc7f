//! Waiting and timeouts, as every waiting built-in type (locks, semaphores, conditions, queues,
//! events, barriers) does them: one decoder of Python's `timeout` argument, one way to wait
//! for a condition with a deadline, one count of the calls waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{RemoteError, RemoteErrorKind};
use crate::sync::typeids;

/// A Python `RuntimeError` raised by `typeid.method`.
pub(crate) fn runtime_error(typeid: &str, method: &str, message: &str) -> RemoteError {
    RemoteError::new(RemoteErrorKind::Runtime, typeid, method, message)
}

/// Timeouts this long or longer mean "no timeout".
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Decodes a timeout in seconds (Python's float): `None`, and anything infinite or longer than
/// a century, mean no timeout; negative and NaN are a Python `ValueError`, worded as CPython's
/// type words it.
pub(crate) fn timeout_of(
    timeout: Option<f64>,
    typeid: &str,
    method: &str,
) -> Result<Option<Duration>, RemoteError> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(RemoteError::new(
            RemoteErrorKind::InvalidValue,
            typeid,
            method,
            refused_timeout(t, typeid),
        )),
        Some(t) => Ok(Duration::try_from_secs_f64(t).ok().filter(|d| *d < FOREVER)),
    }
}

/// CPython's message for a refused timeout `t`.
fn refused_timeout(t: f64, typeid: &str) -> String {
    if t.is_nan() {
        return "Invalid value NaN (not a number)".to_string();
    }
    match typeid {
        typeids::QUEUE | typeids::JOINABLE_QUEUE => {
            "'timeout' must be a non-negative number".into()
        }
        typeids::LOCK | typeids::RLOCK => "timeout value must be positive".into(),
        _ => format!("timeout value must be a non-negative number of seconds, not {t}"),
    }
}

/// The deadline of a wait of `timeout` seconds starting now (see [`timeout_of`]): `None`
/// waits forever.
pub(crate) fn deadline(
    timeout: Option<f64>,
    typeid: &str,
    method: &str,
) -> Result<Option<Instant>, RemoteError> {
    Ok(timeout_of(timeout, typeid, method)?.and_then(|limit| Instant::now().checked_add(limit)))
}

/// A timeout as the seconds the server takes (the client side of [`timeout_of`]).
pub(crate) fn seconds(timeout: Duration) -> Option<f64> {
    Some(timeout.as_secs_f64())
}

/// How long an acquiring call may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all: one attempt (Python's `blocking=False`).
    Try,
    /// Until it succeeds.
    Forever,
    /// At most this long.
    For(Duration),
}

/// Decodes Python's `acquire(blocking, timeout)` pair.
pub(crate) fn wait_mode(
    blocking: bool,
    timeout: Option<f64>,
    typeid: &str,
    method: &str,
) -> Result<Wait, RemoteError> {
    if !blocking {
        return match timeout {
            None => Ok(Wait::Try),
            Some(_) => Err(RemoteError::new(
                RemoteErrorKind::InvalidValue,
                typeid,
                method,
                "can't specify a timeout for a non-blocking call",
            )),
        };
    }
    Ok(match timeout_of(timeout, typeid, method)? {
        None => Wait::Forever,
        Some(d) => Wait::For(d),
    })
}

/// Counts one waiting call for as long as it lives: the count goes down however the wait ends,
/// including when the server drops the call because its client went away.
pub(crate) struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    pub(crate) fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Calls `attempt` until it succeeds, sleeping on `notify` between attempts, for as long as
/// `mode` allows. `None` when it gave up. While it sleeps, it counts itself in `waiting`.
///
/// The wake-up is armed before each attempt, so a `notify_waiters` between an attempt and the
/// sleep is not lost. Dropping the future between attempts takes nothing: whatever `attempt`
/// takes, it takes in the poll that returns it.
pub(crate) async fn wait_until<T>(
    notify: &Notify,
    waiting: &AtomicU64,
    mode: Wait,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    if let Wait::Try = mode {
        return attempt();
    }
    let run = async {
        let mut counted = None;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = attempt() {
                return value;
            }
            if counted.is_none() {
                counted = Some(Counted::new(waiting));
            }
            notified.await;
        }
    };
    match mode {
        Wait::For(limit) => tokio::time::timeout(limit, run).await.ok(),
        _ => Some(run.await),
    }
}

/// Polls `future` once, with a waker that does nothing: for the unit tests of the waiting
/// types, which step waiters by hand.
#[cfg(test)]
pub(crate) fn poll<F: std::future::Future + ?Sized>(
    future: &mut std::pin::Pin<Box<F>>,
) -> std::task::Poll<F::Output> {
    let waker = futures::task::noop_waker();
    future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker))
}
