//! One `tracing` span per call, on the client and on the server, and the trace context that
//! links them across processes.
//!
//! A proxy call opens a span `call` (target `manager_core::client::call`) with the fields `typeid`,
//! `method`, `object`, `connection`, `request` and, when it ends, `outcome`. The server opens a
//! span `call` (target `manager_core::server::call`) with the same fields for the call it runs, and logs
//! one event at `debug` when the call ends (so `MANAGER_LOG=debug` shows one line per call).
//!
//! When the client's span is enabled (a subscriber listens), the request carries a
//! [`TraceContext`], shaped as W3C's `traceparent`: a 128-bit trace id and the 64-bit id of the
//! client's span. Both spans record them as `trace_id` and `span_id`, and the server's span
//! records the client's span id as `parent_id`, so any layer can join the two halves of a call.
//! A call made from inside a method body (a server that calls another server) continues the
//! trace of the call it serves.
//!
//! For OpenTelemetry (`tracing-opentelemetry`), install a [`Propagation`] with
//! [`set_propagation`]: `inject` reads the context of the client's span (its OpenTelemetry
//! span context) and `extract` makes it the remote parent of the server's span
//! (`OpenTelemetrySpanExt::set_parent`), as tonic interceptors do with HTTP headers.
//!
//! With no subscriber listening, the spans are disabled (one relaxed load each), no trace
//! context is made, and requests are the same bytes as without tracing.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

/// The trace context that travels with a request: W3C `traceparent`'s fields.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    /// The trace the call belongs to (never 0).
    pub trace_id: u128,
    /// The id of the client's span of the call (never 0): the server's span's parent.
    pub span_id: u64,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// A context for a new span: in the trace of `parent` if given (with a fresh span id), else
    /// in a new trace.
    pub fn child_of(parent: Option<&TraceContext>) -> TraceContext {
        let span_id = rand::random::<u64>() | 1;
        match parent {
            Some(parent) => TraceContext {
                trace_id: parent.trace_id,
                span_id,
                flags: parent.flags,
            },
            None => TraceContext {
                trace_id: rand::random::<u128>() | 1,
                span_id,
                flags: 1,
            },
        }
    }

    /// The trace id as 32 hex digits, as `traceparent` writes it.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The W3C `traceparent` header value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({})", self.traceparent())
    }
}

/// How trace contexts are read from and written to `tracing` spans, for a subscriber that keeps
/// its own (OpenTelemetry). See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Propagation {
    /// Given the client's span of a call, the context to send with it (its OpenTelemetry span
    /// context); `None` lets the manager make one.
    pub inject: fn(&tracing::Span) -> Option<TraceContext>,
    /// Given the server's span of a call and the context that came with it, makes the context
    /// the span's remote parent.
    pub extract: fn(&tracing::Span, &TraceContext),
}

static PROPAGATION: OnceLock<Propagation> = OnceLock::new();

/// Installs `propagation` for this process, once; a later call changes nothing and returns
/// false.
pub fn set_propagation(propagation: Propagation) -> bool {
    PROPAGATION.set(propagation).is_ok()
}

thread_local! {
    /// The context of the server call whose body runs on this thread, for calls it makes.
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// The context of the server call being served on this thread, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.with(Cell::get)
}

/// Sets the current context while it lives (a server call's body runs in it).
pub(crate) struct Scope(Option<TraceContext>);

impl Scope {
    pub(crate) fn enter(context: Option<TraceContext>) -> Scope {
        Scope(CURRENT.with(|current| current.replace(context)))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

/// The client's span of a call of `method` on `object` of `typeid` over connection
/// `connection`, and the context to send with it (only when the span is enabled).
pub(crate) fn client_span(
    typeid: &str,
    method: &str,
    object: u64,
    connection: u64,
) -> (tracing::Span, Option<TraceContext>) {
    let span = tracing::debug_span!(
        target: "manager_core::client::call",
        "call",
        typeid,
        method,
        object,
        connection,
        request = tracing::field::Empty,
        outcome = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return (span, None);
    }
    let context = PROPAGATION
        .get()
        .and_then(|p| (p.inject)(&span))
        .unwrap_or_else(|| TraceContext::child_of(current().as_ref()));
    span.record("trace_id", tracing::field::display(context.trace_hex()));
    span.record("span_id", tracing::field::display(context.span_hex()));
    (span, Some(context))
}

/// The server's span of a call, and the context its body runs in (only when enabled).
pub(crate) fn server_span(
    method: &str,
    object: u64,
    connection: u64,
    request: u64,
    parent: Option<&TraceContext>,
) -> (tracing::Span, Option<TraceContext>) {
    let span = tracing::debug_span!(
        target: "manager_core::server::call",
        "call",
        typeid = tracing::field::Empty,
        method,
        object,
        connection,
        request,
        outcome = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return (span, None);
    }
    let context = TraceContext::child_of(parent);
    span.record("trace_id", tracing::field::display(context.trace_hex()));
    span.record("span_id", tracing::field::display(context.span_hex()));
    if let Some(parent) = parent {
        span.record("parent_id", tracing::field::display(parent.span_hex()));
        if let Some(propagation) = PROPAGATION.get() {
            (propagation.extract)(&span, parent);
        }
    }
    (span, Some(context))
}

/// Records how the call of `span` ended and logs it: the one `debug` line per call.
pub(crate) fn finished(span: &tracing::Span, typeid: &str, outcome: Cow<'static, str>) {
    span.record("typeid", typeid);
    span.record("outcome", &*outcome);
    let _entered = span.enter();
    tracing::debug!(target: "manager_core::server::call", outcome = &*outcome, "call finished");
}

/// Records how a call ended in its client span.
pub(crate) fn client_finished(
    span: &tracing::Span,
    response: &Result<crate::client::Response, crate::error::Error>,
) {
    if span.is_disabled() {
        return;
    }
    use crate::wire::Reply;
    let outcome: Cow<'static, str> = match response {
        Ok(response) => match &response.reply {
            Reply::Raised { .. } => "raised".into(),
            Reply::Error(error) => outcome_of_error(error),
            _ => "ok".into(),
        },
        Err(error) => format!("failed: {error}").into(),
    };
    span.record("outcome", &*outcome);
    let _entered = span.enter();
    tracing::debug!(target: "manager_core::client::call", outcome = &*outcome, "call finished");
}

/// A failed call's outcome: `error: ` and the kind of the error.
pub(crate) fn outcome_of_error(error: &crate::error::RemoteError) -> Cow<'static, str> {
    format!("error: {:?}", error.kind).into()
}

/// A future polled in a call's span, with the call's trace context current (for the calls it
/// makes).
pub(crate) struct Traced<'a, F> {
    inner: F,
    span: &'a tracing::Span,
    context: Option<TraceContext>,
}

impl<'a, F> Traced<'a, F> {
    pub(crate) fn new(inner: F, span: &'a tracing::Span, context: Option<TraceContext>) -> Self {
        Traced {
            inner,
            span,
            context,
        }
    }
}

impl<F: Future + Unpin> Future for Traced<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        let _scope = Scope::enter(this.context);
        Pin::new(&mut this.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_keeps_the_trace_and_gets_its_own_span() {
        let root = TraceContext::child_of(None);
        let child = TraceContext::child_of(Some(&root));
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(root.traceparent().len(), 55);
    }

    #[test]
    fn a_scope_restores_what_was_current() {
        let outer = TraceContext::child_of(None);
        let _outer = Scope::enter(Some(outer));
        {
            let _inner = Scope::enter(None);
            assert_eq!(current(), None);
        }
        assert_eq!(current(), Some(outer));
    }
}
