//! What CPython's `SyncManager` calls each built-in type, by the typeid constants of
//! [`typeids`]: the methods its proxy exposes (what a CPython client may call, as the
//! `create` reply lists them) and the Python class of its referent (for `repr()`). The server's
//! CPython protocol (`server::python`) reads them from here; the translation of each call onto
//! the Rust methods is there.

use super::typeids;

/// The CPython side of one built-in typeid.
struct Python {
    typeid: &'static str,
    /// The names the CPython proxy exposes.
    exposed: &'static [&'static str],
    /// The Python class of the referent, for a typeid whose `repr()` is the default one (not
    /// the containers).
    class: Option<&'static str>,
}

const LOCK_METHODS: &[&str] = &["acquire", "release"];
const QUEUE_METHODS: &[&str] = &[
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
];

/// Every built-in typeid's CPython names.
const BUILTINS: &[Python] = &[
    Python {
        typeid: typeids::LIST,
        exposed: &[
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
        class: None,
    },
    Python {
        typeid: typeids::DICT,
        exposed: &[
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
        class: None,
    },
    Python {
        typeid: typeids::NAMESPACE,
        exposed: &["__getattribute__", "__setattr__", "__delattr__"],
        class: None,
    },
    Python {
        typeid: typeids::VALUE,
        exposed: &["get", "set"],
        class: None,
    },
    Python {
        typeid: typeids::ARRAY,
        exposed: &["__len__", "__getitem__", "__setitem__"],
        class: None,
    },
    Python {
        typeid: typeids::QUEUE,
        exposed: QUEUE_METHODS,
        class: Some("queue.Queue"),
    },
    Python {
        typeid: typeids::JOINABLE_QUEUE,
        exposed: QUEUE_METHODS,
        class: Some("queue.Queue"),
    },
    Python {
        typeid: typeids::EVENT,
        exposed: &["is_set", "set", "clear", "wait"],
        class: Some("threading.Event"),
    },
    Python {
        typeid: typeids::LOCK,
        exposed: LOCK_METHODS,
        class: Some("_thread.lock"),
    },
    Python {
        typeid: typeids::RLOCK,
        exposed: LOCK_METHODS,
        class: Some("_thread.RLock"),
    },
    Python {
        typeid: typeids::SEMAPHORE,
        exposed: LOCK_METHODS,
        class: Some("threading.Semaphore"),
    },
    Python {
        typeid: typeids::BOUNDED_SEMAPHORE,
        exposed: LOCK_METHODS,
        class: Some("threading.BoundedSemaphore"),
    },
    Python {
        typeid: typeids::CONDITION,
        exposed: &["acquire", "release", "wait", "notify", "notify_all"],
        class: Some("threading.Condition"),
    },
    Python {
        typeid: typeids::BARRIER,
        exposed: &["__getattribute__", "wait", "abort", "reset"],
        class: Some("threading.Barrier"),
    },
    Python {
        typeid: typeids::ITERATOR,
        exposed: &["__next__", "send", "throw", "close"],
        class: None,
    },
];

fn of(typeid: &str) -> Option<&'static Python> {
    BUILTINS.iter().find(|python| python.typeid == typeid)
}

/// The names CPython's proxy of the built-in `typeid` exposes (none for another typeid).
pub(crate) fn exposed(typeid: &str) -> &'static [&'static str] {
    of(typeid).map_or(&[], |python| python.exposed)
}

/// The Python class of the referent of the built-in `typeid` in CPython's `SyncManager`, for
/// the typeids whose `repr()` is the default one (not the containers).
pub(crate) fn class(typeid: &str) -> Option<&'static str> {
    of(typeid).and_then(|python| python.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every typeid the built-in registry registers has its CPython names, and every typeid
    /// named here is registered.
    #[test]
    fn every_registered_builtin_has_its_python_names() {
        let registry = crate::sync::registry();
        let registered = registry.typeids();
        for typeid in &registered {
            assert!(of(typeid).is_some(), "{typeid} has no CPython names");
        }
        for python in BUILTINS {
            assert!(
                registered.iter().any(|typeid| typeid == python.typeid),
                "{} is not registered",
                python.typeid
            );
        }
    }
}
