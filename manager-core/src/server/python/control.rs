//! Control requests of CPython clients (`ident` is `None`): `accept_connection`, `create`,
//! `incref`, `decref`, `get_methods`, `debug_info`, `shutdown`, and `SharedMemoryServer`'s
//! `track_segment`, `release_segment` and `list_segments`.

use super::*;

/// A control request (`ident` is `None`).
pub(super) async fn control(
    me: &Arc<Connection>,
    mut request: Request,
    methods: &mut bool,
) -> (PyValue, After) {
    let state = &me.state;
    let refs = &state.python;
    let answer = match request.method.as_str() {
        "dummy" => ok(PyValue::None),
        "accept_connection" => {
            *methods = true;
            ok(PyValue::None)
        }
        "shutdown" => return (ok(PyValue::None), After::Stop),
        "number_of_objects" => ok(PyValue::Int(state.table.lock().len() as i128)),
        "debug_info" => {
            let info = state.debug_info();
            let lines: Vec<String> = info
                .objects
                .iter()
                .map(|o| {
                    format!(
                        "  {}:       refcount={}\n    {}",
                        id_to_hex(o.id),
                        o.refcount,
                        o.type_name
                    )
                })
                .collect();
            ok(PyValue::str(lines.join("\n")))
        }
        "create" => {
            if request.args.is_empty() {
                return (
                    traceback("TypeError", "create needs a typeid"),
                    After::Continue,
                );
            }
            let Value::Str(typeid) = request.args.remove(0) else {
                return (traceback("TypeError", "a typeid is a str"), After::Continue);
            };
            if let Some(message) = refused_typeid(&typeid) {
                return (
                    raise(
                        "builtins",
                        "NotImplementedError",
                        vec![PyValue::str(message)],
                    ),
                    After::Continue,
                );
            }
            if matches!(typeid.as_str(), "list" | "dict") {
                if let Some(first) = request.args.first_mut() {
                    *first = call::read_through(me, std::mem::take(first)).await;
                }
            }
            let owner = refs.owner(state);
            let params = state.registry.get(&typeid).and_then(|e| e.params.clone());
            let args = match create_args(&typeid, request.args, request.kwds, params.as_deref()) {
                Ok(args) => args,
                Err(message) => return (traceback("TypeError", &message), After::Continue),
            };
            let created = if runs_factory(state, &typeid) {
                // A factory is user code: it runs on a worker thread, as a plain method does.
                let typeid = typeid.clone();
                state
                    .on_worker(move || owner.create(&typeid, Args::Value(args)))
                    .await
                    .unwrap_or_else(|panic| {
                        Reply::Error(RemoteError::new(
                            RemoteErrorKind::Panic,
                            "",
                            "create",
                            panic_message(&panic),
                        ))
                    })
            } else {
                owner.create(&typeid, Args::Value(args))
            };
            match created {
                Reply::Proxy(token) => ok(PyValue::Tuple(vec![
                    PyValue::str(id_to_hex(token.id)),
                    exposed_of(state, token.id),
                ])),
                Reply::Error(e) => as_traceback(error_reply(e)),
                other => traceback("RuntimeError", &format!("unexpected {other:?}")),
            }
        }
        "incref" => match single_ident(&request) {
            Ok(id) => match refs.owner(state).acquire(id) {
                Some(_) => ok(PyValue::None),
                None => traceback("KeyError", &format!("'{}'", id_to_hex(id))),
            },
            Err(reply) => reply,
        },
        "decref" => match single_ident(&request) {
            Ok(id) => {
                // The reference a #PROXY reply handed to a method connection, if one waits.
                let handed = {
                    let mut handed = refs.handed.lock();
                    let taken = handed.get_mut(&id).and_then(|waiting| waiting.pop());
                    if handed.get(&id).is_some_and(|w| w.is_empty()) {
                        handed.remove(&id);
                    }
                    taken
                };
                match handed.and_then(|conn| conn.upgrade()) {
                    Some(conn) if conn.held.lock().contains(id) => conn.decref(id),
                    _ => refs.owner(state).decref(id),
                }
                ok(PyValue::None)
            }
            Err(reply) => reply,
        },
        // SharedMemoryServer's requests: the names are tracked by the CPython clients as a
        // whole (each `SharedMemoryManager.SharedMemory` tracks on a connection of its own),
        // so they stay until `release_segment` or shutdown, as in CPython.
        "track_segment" => match segment_name(&request) {
            Ok(name) => match crate::shared_memory::exists(name) {
                Err(e) => traceback("FileNotFoundError", &format!("{e}: {name:?}")),
                Ok(()) => match state.segments.track(&refs.owner(state), name) {
                    Ok(_) => ok(PyValue::None),
                    Err(message) => traceback("ValueError", &message),
                },
            },
            Err(reply) => reply,
        },
        "release_segment" => match segment_name(&request) {
            Ok(name) => match state.segments.release(&refs.owner(state), name) {
                Ok(_) => ok(PyValue::None),
                Err(message) => traceback("ValueError", &message),
            },
            Err(reply) => reply,
        },
        "list_segments" => ok(PyValue::List(
            state
                .segments
                .names()
                .into_iter()
                .map(PyValue::str)
                .collect(),
        )),
        "get_methods" => match request.args.as_slice() {
            [Value::Proxy(token)] => ok(exposed_of(state, token.id)),
            _ => traceback("TypeError", "get_methods takes a token"),
        },
        other => traceback("AssertionError", &format!("{other:?} unrecognized")),
    };
    (answer, After::Continue)
}

/// The one argument of `track_segment` and `release_segment`: a block's name.
fn segment_name(request: &Request) -> Result<&str, PyValue> {
    match request.args.as_slice() {
        [Value::Str(name)] => Ok(name),
        _ => Err(traceback("TypeError", "expected one segment name (a str)")),
    }
}
