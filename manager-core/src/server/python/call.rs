//! A CPython client's method call on an object: translated for the built-in types, run as
//! native calls run (plain bodies on worker threads), and answered in CPython's forms.

use super::*;

/// The most items `list * n` may make.
const MAX_REPEATED_ITEMS: i128 = crate::sync::MAX_REPEATED_ITEMS as i128;

/// The value of a built-in list or dict of this server that `value` is a proxy of (what
/// `d.update(other)` or `l.extend(other)` reads of a proxy in CPython's server, where it
/// iterates the proxy); `value` itself otherwise.
pub(super) async fn read_through(me: &Arc<Connection>, value: Value) -> Value {
    let Value::Proxy(token) = &value else {
        return value;
    };
    let readable = me
        .state
        .table
        .lock()
        .entry(token.id)
        .is_some_and(|entry| builtin(entry) && matches!(&*entry.typeid, "list" | "dict"));
    if !readable {
        return value;
    }
    let request = Request {
        ident: Some(id_to_hex(token.id)),
        method: "#GETVALUE".into(),
        args: Vec::new(),
        kwds: Vec::new(),
    };
    match Box::pin(call(me, request)).await {
        PyValue::Tuple(mut parts) if parts.len() == 2 && parts[0].as_str() == Some("#RETURN") => {
            match parts.pop().unwrap_or_default().into_value() {
                Ok(mut read) => {
                    let state = &me.state;
                    retarget(
                        &mut read,
                        state.python_address.as_ref(),
                        Some(&state.address),
                    );
                    read
                }
                Err(_) => value,
            }
        }
        _ => value,
    }
}

/// Where a call's plain body runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Exec {
    /// The connection is served by a runtime task: a plain body goes to a worker thread, unless
    /// its method is quick.
    Task,
    /// The connection has a thread of its own (see `thread`), which runs the body itself.
    Thread,
}

/// A method call on an object, from a connection served by a runtime task.
pub(super) async fn call(me: &Arc<Connection>, request: Request) -> PyValue {
    call_in(me, request, Exec::Task).await
}

/// A method call on an object.
pub(super) async fn call_in(me: &Arc<Connection>, mut request: Request, exec: Exec) -> PyValue {
    let Some(id) = request.ident.as_deref().and_then(id_from_hex) else {
        return traceback("KeyError", &format!("{:?}", request.ident));
    };
    let object = me.state.table.lock().get(id);
    let Some((entry, referent)) = object else {
        return traceback("KeyError", &format!("'{}'", id_to_hex(id)));
    };
    let is_builtin = builtin(&entry);
    if is_builtin && matches!(request.method.as_str(), "__repr__" | "__str__") {
        if let Some(class) = python_class(&entry.typeid) {
            // CPython's server prints repr(referent); 3.8 prints these so (later versions add
            // the state after the address), and the address is the object's id here.
            return ok(PyValue::str(format!("<{class} object at 0x{id:x}>")));
        }
    }
    if is_builtin && matches!(request.method.as_str(), "update" | "extend") {
        if let Some(first) = request.args.first_mut() {
            *first = read_through(me, std::mem::take(first)).await;
        }
    }
    let translated = if is_builtin {
        translate(&entry.typeid, &request.method, request.args, request.kwds)
    } else {
        Ok(Translated {
            method: "",
            args: request.args,
            kwds: request.kwds,
            after: Post::Keep,
        })
    };
    let translated = match translated {
        Ok(t) => t,
        // A method the server does not serve is a #TRACEBACK, as CPython's server reports a
        // name outside `exposed`; what the method itself would raise is an #ERROR.
        Err(("AttributeError", message)) => return not_exposed(&request.method, &message),
        Err((exception, message)) => {
            return raise("builtins", exception, vec![PyValue::str(message)])
        }
    };
    let name = if is_builtin {
        translated.method
    } else {
        request.method.as_str()
    };
    let index = match entry.method(name) {
        Some((index, true)) => index,
        _ if request.method == "#GETVALUE"
            || request.method == "__repr__"
            || request.method == "__str__" =>
        {
            return ok(PyValue::str(format!(
                "<{} object {}>",
                entry.typeid,
                id_to_hex(id)
            )));
        }
        _ => {
            return not_exposed(
                &request.method,
                &format!(
                    "method {:?} of {:?} object is not in exposed={:?}",
                    request.method,
                    entry.type_name,
                    entry.exposed_names()
                ),
            )
        }
    };
    let arranged = match arrange(
        entry.methods[index].params,
        translated.args,
        translated.kwds,
        is_builtin.then_some(request.method.as_str()),
    ) {
        Ok(args) => args,
        Err(mut e) => {
            e.typeid = entry.typeid.to_string();
            e.method = request.method.clone();
            return error_reply(e);
        }
    };
    let context: CallContext = me.context(id);
    let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Args::Value(arranged).decode(|de| referent.dispatch(index, de, context))
    }));
    let call = match dispatched {
        Ok(Ok(Ok(call))) => call,
        Ok(Ok(Err(e))) => return error_reply(dispatch_error(&entry, &request.method, e)),
        Ok(Err(message)) => return traceback("TypeError", &message),
        Err(panic) => return traceback("RuntimeError", &panic_message(&panic)),
    };
    let mut ticket = Activity::start(&me.state, &entry, index, id, me.id);
    // A span as for native calls, with no parent (CPython sends no trace context) and no
    // request id (its protocol has none).
    let (span, _) = crate::trace::server_span(&request.method, id, me.id, 0, None);
    // As for native clients: a plain body runs on a worker thread, never in this task, unless
    // its method is quick (see `server::quick`).
    // On a connection's own thread, the body runs right there, as CPython's server runs it.
    let inline = |job: crate::object::Job| {
        let _entered = span.enter();
        std::panic::catch_unwind(AssertUnwindSafe(job))
    };
    let outcome = match call {
        Call::Ready(job) if exec == Exec::Thread => inline(job),
        Call::Ready(job) => match me.state.quick.admit(&entry, index) {
            Some(admitted) => {
                let _entered = span.enter();
                admitted.run(&entry, index, job)
            }
            None => me.state.on_worker(job).await,
        },
        Call::Locking(lock) if exec == Exec::Thread => inline(lock.await),
        Call::Locking(lock) => {
            let job = lock.await;
            me.state.on_worker(job).await
        }
        Call::Async(call) => AssertUnwindSafe(call).catch_unwind().await,
    };
    if !matches!(
        outcome,
        Ok(Outcome::Value(_) | Outcome::Object(_) | Outcome::Stream(_))
    ) {
        ticket.failed();
    }
    if !span.is_disabled() {
        let ended = match &outcome {
            Ok(Outcome::Value(_) | Outcome::Object(_)) => "ok".into(),
            Ok(Outcome::Raised(_)) => "raised".into(),
            Ok(Outcome::Failed(e)) => crate::trace::outcome_of_error(e),
            Ok(Outcome::Stream(_)) => "stream".into(),
            Err(_) => "panic".into(),
        };
        crate::trace::finished(&span, &entry.typeid, ended);
    }
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(panic) => {
            return traceback(
                "RuntimeError",
                &format!("the method panicked: {}", panic_message(&panic)),
            )
        }
    };
    match outcome {
        Outcome::Failed(e) => error_reply(e),
        Outcome::Raised(raised) => {
            let type_name = raised.type_name();
            let value = to_value(&*raised as &dyn erased_serde::Serialize).ok();
            match raised.into_any().downcast::<RemoteError>() {
                Ok(remote) => match translated.after {
                    Post::KeyErrorOf(key) if remote.kind == RemoteErrorKind::Key => {
                        raise("builtins", "KeyError", vec![PyValue::from_value(key)])
                    }
                    Post::Iterator if remote.kind == RemoteErrorKind::Empty => {
                        raise("builtins", "StopIteration", Vec::new())
                    }
                    Post::Iterator if remote.kind == RemoteErrorKind::Attribute => {
                        not_exposed(&request.method, &remote.message)
                    }
                    Post::DefaultIfMissing(mut default) if remote.kind == RemoteErrorKind::Key => {
                        retarget(
                            &mut default,
                            Some(&me.state.address),
                            me.state.python_address.as_ref(),
                        );
                        finish(&me.state, default, Post::Keep).map_or_else(|e| e, ok)
                    }
                    _ => error_reply(*remote),
                },
                // A user error type: Python gets an Exception carrying its name and value.
                Err(_) => raise(
                    "builtins",
                    "Exception",
                    vec![
                        PyValue::str(type_name),
                        value.map(PyValue::from_value).unwrap_or_default(),
                    ],
                ),
            }
        }
        Outcome::Value(value) => {
            let mapped = entry.method_to_typeid[index].clone();
            if let Some(target) = mapped {
                return proxy_reply(me, &entry, name, &target, value.into_any());
            }
            let value: &dyn erased_serde::Serialize = &*value;
            match to_value(value) {
                Ok(mut value) => {
                    retarget(
                        &mut value,
                        Some(&me.state.address),
                        me.state.python_address.as_ref(),
                    );
                    if let (Post::Repeat(n), Value::List(items)) = (&translated.after, &value) {
                        // A client must not make the server build a list of any size it likes.
                        if (items.len() as i128).saturating_mul(*n) > MAX_REPEATED_ITEMS {
                            return raise(
                                "builtins",
                                "MemoryError",
                                vec![PyValue::str(format!(
                                    "a manager server builds lists of at most \
                                     {MAX_REPEATED_ITEMS} items by repetition"
                                ))],
                            );
                        }
                    }
                    finish(&me.state, value, translated.after).map_or_else(|e| e, ok)
                }
                Err(e) => reply(
                    "#UNSERIALIZABLE",
                    PyValue::str(format!("the result cannot be sent: {e}")),
                ),
            }
        }
        Outcome::Object(value) => match entry.method_to_typeid[index].clone() {
            Some(target) => proxy_reply(me, &entry, name, &target, value),
            None => traceback(
                "RuntimeError",
                "a result meant for a typeid has none mapped",
            ),
        },
        // A CPython client takes a stream one item per call, as CPython's `IteratorProxy`.
        Outcome::Stream(stream) => {
            let iterator = crate::sync::typeids::ITERATOR;
            if me.state.registry.get(iterator).is_none() {
                // Dropping the stream stops its producer before it made anything.
                return traceback(
                    "RuntimeError",
                    "this method returns a stream, which a CPython client receives as an \
                     Iterator proxy, and this server has no typeid \"Iterator\" (register the \
                     built-in types with manager::sync::register to add it)",
                );
            }
            let class = (is_builtin && &*entry.typeid == "dict" && name == "iter")
                .then_some("dict_keyiterator");
            proxy_reply(me, &entry, name, iterator, Box::new((stream, class)))
        }
    }
}
