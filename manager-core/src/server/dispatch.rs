//! Running a call: the checks, the decoding of its arguments, and where its body runs.
//!
//! Nothing a user wrote runs in the connection's read loop, except methods their type declares
//! quick (`quick`). A plain method's body runs on a worker thread (`workers`) once its object's
//! lock is held; waiting for that lock, and the
//! whole of an `async` method, happen in tokio tasks, where waiting costs no thread. The reply
//! is written by whoever finishes the call (see `transport::Outbox`), so a plain call crosses
//! threads once, from the reader to a worker; on a connection through shared memory, not at
//! all when it is the last request read (`inline`).
//!
//! Order: calls of one connection that the client made one after the other (waiting for each
//! reply) run in that order. Calls in flight together on one connection run concurrently and
//! may finish in any order, as calls from different connections do; only the object's lock
//! orders them (`&self` calls share it, `&mut self` calls take it alone). Reference counts and
//! cancels are applied by the read loop in the order they arrive; a call already read holds its
//! object, so a release that follows it never pulls the object from under it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;

use super::activity::{Activity, Ticket};
use super::connection::Connection;
use super::in_flight::Permit;
use super::reply::Finished;
use super::workers::{Boxed, Run};
use super::{dispatch_error, panic_message, Args};
use crate::context::CallContext;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::object::{Call, DispatchError, Job, Outcome};
use crate::registry::{Entry, FactoryError, Source};
use crate::trace::{self, TraceContext};
use crate::wire::Reply;

/// A call between its dispatch and its reply.
pub(super) struct Running {
    id: u64,
    entry: Arc<Entry>,
    index: usize,
    ticket: Ticket,
    /// The call's span (disabled when no subscriber listens), and the trace context its body
    /// runs in.
    span: tracing::Span,
    trace: Option<TraceContext>,
    /// One of the connection's `max_in_flight`.
    _permit: Permit,
}

impl Running {
    /// The typeid's entry and the method's index.
    pub(super) fn method(&self) -> (&Arc<Entry>, usize) {
        (&self.entry, self.index)
    }
}

/// What the server's worker threads do.
pub(super) enum Work {
    /// A plain method's body, its object's lock held, and the call it answers (not boxed
    /// again: the body is a box already).
    Call {
        conn: Arc<Connection>,
        running: Running,
        job: Job,
    },
    /// Other user code: a factory, a CPython client's call.
    Other(Boxed),
}

impl Run for Work {
    fn run(self) {
        match self {
            Work::Call { conn, running, job } => conn.run_call(running, job),
            Work::Other(work) => work(),
        }
    }
}

impl Connection {
    pub(super) fn call(
        self: &Arc<Self>,
        id: u64,
        object_id: u64,
        method: &str,
        frame: Bytes,
        args_at: usize,
        parent: Option<TraceContext>,
    ) {
        let (span, trace) = trace::server_span(method, object_id, self.id, id, parent.as_ref());
        let _entered = span.enter();
        let object = {
            // The connection's references keep the object in the table while `held` is locked.
            let held = self.held.lock();
            held.contains(object_id)
                .then(|| self.state.table.lock().get(object_id))
                .flatten()
        };
        let Some((entry, referent)) = object else {
            return self.refuse(&span, RemoteError::new(
                RemoteErrorKind::UnknownObject,
                "",
                method,
                format!("object {object_id} does not exist or this connection holds no reference to it"),
            ), id);
        };
        let index = match entry.method(method) {
            Some((index, true)) => index,
            Some((_, false)) => {
                return self.refuse(
                    &span,
                    RemoteError::new(
                        RemoteErrorKind::NotExposed,
                        &*entry.typeid,
                        method,
                        format!(
                            "method {method:?} is not exposed by typeid {:?} (exposed: {})",
                            &*entry.typeid,
                            entry.exposed_names().join(", ")
                        ),
                    ),
                    id,
                )
            }
            None => {
                return self.refuse(
                    &span,
                    RemoteError::new(
                        RemoteErrorKind::NoSuchMethod,
                        &*entry.typeid,
                        method,
                        format!(
                            "{} has no method {method:?} (exposed: {})",
                            entry.type_name,
                            entry.exposed_names().join(", ")
                        ),
                    ),
                    id,
                )
            }
        };
        let context = self.context(object_id);
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut de = postcard::Deserializer::from_bytes(&frame[args_at..]);
            let call = referent.dispatch(
                index,
                &mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de),
                context,
            );
            let left = de.finalize().map(|rest| rest.len()).unwrap_or(0);
            match call {
                Ok(_) if left > 0 => Err(DispatchError::BadArguments(format!(
                    "{left} bytes left over after the arguments (too many arguments?)"
                ))),
                other => other,
            }
        }));
        let call = match dispatched {
            Ok(Ok(call)) => call,
            Ok(Err(e)) => return self.refuse(&span, dispatch_error(&entry, method, e), id),
            Err(panic) => {
                return self.refuse(
                    &span,
                    RemoteError::new(
                        RemoteErrorKind::Panic,
                        &*entry.typeid,
                        method,
                        format!("decoding the arguments panicked: {}", panic_message(&panic)),
                    ),
                    id,
                )
            }
        };
        let Some(permit) = self.in_flight.try_take() else {
            // Not reached: the read loop read this request with a permit free.
            return self.refuse(
                &span,
                RemoteError::new(
                    RemoteErrorKind::Limit,
                    &*entry.typeid,
                    method,
                    "too many calls in flight on this connection",
                ),
                id,
            );
        };
        let running = Running {
            id,
            ticket: Activity::start(&self.state, &entry, index, object_id, self.id),
            entry,
            index,
            span: span.clone(),
            trace,
            _permit: permit,
        };
        drop(_entered);
        match call {
            Call::Ready(job) => match self.state.quick.admit(&running.entry, running.index) {
                Some(admitted) => {
                    let outcome = {
                        let _entered = running.span.enter();
                        let _scope = trace::Scope::enter(running.trace);
                        admitted.run(&running.entry, running.index, job)
                    };
                    self.complete(running, outcome);
                }
                None => self.run_plain(running, job),
            },
            Call::Locking(lock) => {
                // Waiting for the object's lock costs no thread: a task waits, and hands the
                // body to a worker once it holds the lock.
                let conn = self.clone();
                tokio::spawn(async move {
                    let job = tokio::select! {
                        biased;
                        job = lock => job,
                        // The client is gone, or the server is stopping: stop waiting.
                        _ = conn.closed.cancelled() => return,
                    };
                    conn.run_on_worker(running, job);
                });
            }
            Call::Async(call) => {
                // An async method may wait; the client can cancel it by id.
                let cancel = self.closed.child_token();
                self.calls.lock().insert(id, cancel.clone());
                let conn = self.clone();
                tokio::spawn(async move {
                    let outcome = tokio::select! {
                        // Cancelled by the client, or the client is gone, or the server is
                        // stopping: drop the call where it waits. Looked at first: a call
                        // woken by what the next request did (a put that wakes a cancelled
                        // get) must not take it for a caller that has given up (the item would
                        // be lost with the reply nobody reads).
                        biased;
                        _ = cancel.cancelled() => {
                            conn.calls.lock().remove(&id);
                            if conn.closed.is_cancelled() {
                                return;
                            }
                            // Cancelled by its caller, who may still wait for the answer (an
                            // acquisition whose deadline passed undoes a success): say so.
                            let entry = running.entry.clone();
                            let method = entry.methods[running.index].name;
                            conn.complete(running, Ok(Outcome::Failed(RemoteError::new(
                                RemoteErrorKind::Cancelled,
                                &*entry.typeid,
                                method,
                                "cancelled by the caller before it finished",
                            ))));
                            return;
                        }
                        outcome = trace::Traced::new(
                            AssertUnwindSafe(call).catch_unwind(),
                            &running.span,
                            running.trace,
                        ) => outcome,
                    };
                    conn.calls.lock().remove(&id);
                    conn.complete(running, outcome);
                });
            }
        }
    }

    /// Answers a call refused before it ran (no such object or method, bad arguments).
    fn refuse(&self, span: &tracing::Span, error: RemoteError, id: u64) {
        if !span.is_disabled() {
            trace::finished(span, &error.typeid, trace::outcome_of_error(&error));
        }
        self.send_error(error, id);
    }

    /// Runs a plain method's body (its object's lock held) where its request was read when
    /// the shared-memory reader offers to (`inline`), else on a worker thread.
    fn run_plain(self: &Arc<Self>, running: Running, job: Job) {
        match super::inline::wanted(&self.state, &running) {
            Some(slot) => super::inline::hand_over(running, job, slot),
            None => self.run_on_worker(running, job),
        }
    }

    /// Runs a plain method's body (its object's lock held) on a worker thread, which also
    /// writes the reply.
    fn run_on_worker(self: &Arc<Self>, running: Running, job: Job) {
        self.state.workers.spawn(Work::Call {
            conn: self.clone(),
            running,
            job,
        });
    }

    /// A plain method's body, on a worker thread (or inline), and its reply.
    pub(super) fn run_call(self: Arc<Self>, running: Running, job: Job) {
        if self.closed.is_cancelled() {
            // Queued behind busy workers while its client went away: nobody waits for it.
            return;
        }
        let outcome = {
            let _entered = running.span.enter();
            let _scope = trace::Scope::enter(running.trace);
            std::panic::catch_unwind(AssertUnwindSafe(job))
        };
        self.complete(running, outcome);
    }

    /// The context a method of `object` sees for a call from this connection.
    pub(super) fn context(self: &Arc<Self>, object: u64) -> CallContext {
        CallContext::new(self.id, object, self.closed.clone(), self.clone())
    }

    /// Sends the reply of a call that ran to its end (or panicked).
    fn complete(self: &Arc<Self>, running: Running, outcome: std::thread::Result<Outcome>) {
        let Running {
            id,
            entry,
            index,
            mut ticket,
            span,
            trace: _,
            _permit,
        } = running;
        let entry = &*entry;
        let outcome = outcome.unwrap_or_else(|panic| {
            Outcome::Failed(RemoteError::new(
                RemoteErrorKind::Panic,
                &*entry.typeid,
                entry.methods[index].name,
                panic_message(&panic),
            ))
        });
        if matches!(outcome, Outcome::Failed(_) | Outcome::Raised(_)) {
            ticket.failed();
        }
        if let Outcome::Stream(stream) = outcome {
            // The call is done once the stream is open; its items follow on their own.
            drop(ticket);
            return self.open_stream(id, entry, index, stream);
        }
        let reply = self.finish_call(entry, index, outcome);
        if !span.is_disabled() {
            trace::finished(&span, &entry.typeid, finished_outcome(&reply));
        }
        // Counted before the caller can see the reply: a debug_info() it sends next counts it.
        drop(ticket);
        self.send_reply(id, reply, (&entry.typeid, entry.methods[index].name));
    }

    pub(super) fn finish_call(&self, entry: &Entry, index: usize, outcome: Outcome) -> Finished {
        let method = entry.methods[index].name;
        match outcome {
            Outcome::Failed(error) => Finished::Reply(Reply::Error(error)),
            Outcome::Raised(error) => Finished::Payload(
                Reply::Raised {
                    type_name: error.type_name().to_string(),
                },
                error,
            ),
            Outcome::Value(value) => match &entry.method_to_typeid[index] {
                None => Finished::Payload(Reply::Value, value),
                Some(target) => {
                    Finished::Reply(self.convert(entry, method, target, value.into_any()))
                }
            },
            Outcome::Object(value) => match &entry.method_to_typeid[index] {
                Some(target) => Finished::Reply(self.convert(entry, method, target, value)),
                None => Finished::Reply(Reply::Error(RemoteError::new(
                    RemoteErrorKind::Conversion,
                    &*entry.typeid,
                    method,
                    "the method's result is meant for a typeid, but none is mapped",
                ))),
            },
            Outcome::Stream(_) => Finished::Reply(Reply::Error(RemoteError::new(
                RemoteErrorKind::Conversion,
                &*entry.typeid,
                method,
                "the method returns a stream, which cannot be sent here",
            ))),
        }
    }

    /// Turns a `method_to_typeid` result into a new object of `target` held by this connection.
    pub(super) fn convert(
        &self,
        entry: &Entry,
        method: &str,
        target: &str,
        value: Box<dyn std::any::Any + Send>,
    ) -> Reply {
        let error = |message: String| {
            Reply::Error(RemoteError::new(
                RemoteErrorKind::Conversion,
                &*entry.typeid,
                method,
                message,
            ))
        };
        let Some(target_entry) = self.state.registry.get(target) else {
            return error(format!("typeid {target:?} is not registered"));
        };
        if let Err(limit) = self.room_for(None, &entry.typeid, method) {
            return Reply::Error(limit);
        }
        let made = std::panic::catch_unwind(AssertUnwindSafe(|| {
            (target_entry.from_result.convert)(value)
        }));
        match made {
            Ok(Ok(referent)) => {
                match self.insert(target_entry.clone(), referent, (&entry.typeid, method)) {
                    Ok(token) => Reply::Proxy(token),
                    Err(limit) => Reply::Error(limit),
                }
            }
            Ok(Err(message)) => error(format!(
                "cannot make a {target:?} from the result: {message}"
            )),
            Err(panic) => error(format!(
                "making a {target:?} from the result panicked: {}",
                panic_message(&panic)
            )),
        }
    }

    /// The refusal of a create of `typeid` from a client whose proxy stands for objects of the
    /// type `object_type`, when `typeid` makes objects of another type (an unknown typeid is
    /// left to [`Connection::create`] to refuse). Types are compared by name without their
    /// module paths, so that a client program that defines the type itself (its own copy of
    /// the server's `Pair`) still agrees.
    pub(super) fn wrong_type(&self, typeid: &str, object_type: &str) -> Option<RemoteError> {
        let entry = self.state.registry.get(typeid)?;
        (unqualified(entry.type_name) != unqualified(object_type)).then(|| {
            RemoteError::new(
                RemoteErrorKind::WrongType,
                typeid,
                "create",
                format!(
                    "typeid {typeid:?} makes `{}` objects, but the client's proxy stands for `{object_type}`: declare the typeid with the proxy of `{}`",
                    entry.type_name, entry.type_name
                ),
            )
        })
    }

    pub(super) fn create(self: &Arc<Self>, typeid: &str, args: Args<'_>) -> Reply {
        let error =
            |kind, message: String| Reply::Error(RemoteError::new(kind, typeid, "create", message));
        let Some(entry) = self.state.registry.get(typeid) else {
            return error(
                RemoteErrorKind::UnknownTypeid,
                format!(
                    "typeid {typeid:?} is not registered on this server (registered: {})",
                    self.state.registry.typeids().join(", ")
                ),
            );
        };
        if !entry.create_method {
            return error(
                RemoteErrorKind::NoCreateMethod,
                format!("typeid {typeid:?} has no create method: clients cannot create it, only receive it from a method_to_typeid result"),
            );
        }
        let shared_id = self.state.shared.get(&entry.typeid).copied();
        if let Err(limit) = self.room_for(shared_id, typeid, "create") {
            return Reply::Error(limit);
        }
        match &entry.source {
            Source::Shared(_) => {
                let id = self.state.shared[&entry.typeid];
                match self.acquire_within_limit(id, (typeid, "create")) {
                    Err(limit) => Reply::Error(limit),
                    Ok(Some(token)) => Reply::Proxy(token),
                    Ok(None) => error(
                        RemoteErrorKind::Shutdown,
                        "the shared instance is gone".into(),
                    ),
                }
            }
            Source::Factory(factory) => {
                let context = self.context(0);
                let made = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    args.decode(|de| factory(de, &context))
                        .map_err(FactoryError::BadArguments)?
                }));
                match made {
                    Ok(Ok(referent)) => {
                        match self.insert(entry.clone(), referent, (typeid, "create")) {
                            Ok(token) => Reply::Proxy(token),
                            Err(limit) => Reply::Error(limit),
                        }
                    }
                    Ok(Err(FactoryError::BadArguments(message))) => error(
                        RemoteErrorKind::BadArguments,
                        format!("the arguments do not fit the factory of {typeid:?}: {message}"),
                    ),
                    Ok(Err(FactoryError::Refused(mut refused))) => {
                        refused.typeid = typeid.to_string();
                        refused.method = "create".to_string();
                        Reply::Error(refused)
                    }
                    Err(panic) => error(
                        RemoteErrorKind::Panic,
                        format!(
                            "the factory of {typeid:?} panicked: {}",
                            panic_message(&panic)
                        ),
                    ),
                }
            }
            Source::None => error(
                RemoteErrorKind::NoCreateMethod,
                format!("typeid {typeid:?} has no factory"),
            ),
        }
    }
}

/// How a call ended, for its span.
fn finished_outcome(reply: &Finished) -> std::borrow::Cow<'static, str> {
    match reply {
        Finished::Payload(Reply::Raised { .. }, _) => "raised".into(),
        Finished::Reply(Reply::Error(error)) => trace::outcome_of_error(error),
        _ => "ok".into(),
    }
}

/// Whether a create of `typeid` runs user code (a factory), and so belongs on a worker thread.
pub(super) fn runs_factory(state: &super::State, typeid: &str) -> bool {
    state
        .registry
        .get(typeid)
        .is_some_and(|entry| entry.create_method && matches!(entry.source, Source::Factory(_)))
}

/// A type's name without the module paths in it: `app::Pair` -> `Pair`,
/// `manager_core::sync::semaphore::SemaphoreObject<false>` -> `SemaphoreObject<false>`.
fn unqualified(type_name: &str) -> String {
    let mut out = String::with_capacity(type_name.len());
    let mut rest = type_name;
    while let Some(at) = rest.find("::") {
        let segment = &rest[..at];
        out.push_str(segment.trim_end_matches(|c: char| c.is_alphanumeric() || c == '_'));
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod unqualified_tests {
    use super::unqualified;

    #[test]
    fn module_paths_are_dropped_everywhere_in_a_type_name() {
        assert_eq!(unqualified("app::inventory::Pair"), "Pair");
        assert_eq!(unqualified("Pair"), "Pair");
        assert_eq!(
            unqualified("a::Map<alloc::string::String, b::c::Item>"),
            "Map<String, Item>"
        );
        assert_eq!(unqualified("m::Sem<false>"), "Sem<false>");
    }
}
