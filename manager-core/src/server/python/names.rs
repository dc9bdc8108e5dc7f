//! The names CPython's `SyncManager` gives the built-in types: the methods its proxies expose,
//! and the Python classes of their referents.

use super::*;

/// The names a CPython proxy may call on the object, as its `create` reply lists them.
pub(super) fn exposed_of(state: &State, id: u64) -> PyValue {
    let entry = state.table.lock().entry(id).cloned();
    let names: Vec<String> = match entry {
        Some(entry) if builtin(&entry) => python_names(&entry.typeid)
            .iter()
            .map(|n| n.to_string())
            .collect(),
        Some(entry) => entry.exposed_names(),
        None => Vec::new(),
    };
    PyValue::Tuple(names.into_iter().map(PyValue::Str).collect())
}

/// The Python class of a built-in typeid's referent in CPython's `SyncManager`, for the
/// typeids whose `repr()` is the default one (not the containers).
pub(super) fn python_class(typeid: &str) -> Option<&'static str> {
    Some(match typeid {
        "Queue" | "JoinableQueue" => "queue.Queue",
        "Event" => "threading.Event",
        "Lock" => "_thread.lock",
        "RLock" => "_thread.RLock",
        "Semaphore" => "threading.Semaphore",
        "BoundedSemaphore" => "threading.BoundedSemaphore",
        "Condition" => "threading.Condition",
        "Barrier" => "threading.Barrier",
        _ => return None,
    })
}

/// The exposed names of CPython's proxies for the built-in typeids.
pub(super) fn python_names(typeid: &str) -> &'static [&'static str] {
    match typeid {
        "list" => &[
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__len__",
            "__setitem__",
            "append",
            "count",
            "extend",
            "index",
            "insert",
            "pop",
            "remove",
            "reverse",
        ],
        "dict" => &[
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__iter__",
            "__len__",
            "__setitem__",
            "clear",
            "copy",
            "get",
            "items",
            "keys",
            "pop",
            "popitem",
            "setdefault",
            "update",
            "values",
        ],
        "Namespace" => &["__getattribute__", "__setattr__", "__delattr__"],
        "Value" => &["get", "set"],
        "Array" => &["__len__", "__getitem__", "__setitem__"],
        "Queue" | "JoinableQueue" => &[
            "empty",
            "full",
            "get",
            "get_nowait",
            "join",
            "put",
            "put_nowait",
            "qsize",
            "task_done",
        ],
        "Event" => &["is_set", "set", "clear", "wait"],
        "Lock" | "RLock" | "Semaphore" | "BoundedSemaphore" => &["acquire", "release"],
        "Condition" => &["acquire", "release", "wait", "notify", "notify_all"],
        "Barrier" => &["__getattribute__", "wait", "abort", "reset"],
        "Iterator" => &["__next__", "send", "throw", "close"],
        _ => &[],
    }
}
