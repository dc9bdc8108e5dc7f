//! The names CPython's `SyncManager` gives the built-in types (the methods its proxies expose,
//! and the Python classes of their referents), kept beside the types in `sync::python`.

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
/// typeids whose `repr()` is the default one (not the containers): see `sync::python`.
pub(super) fn python_class(typeid: &str) -> Option<&'static str> {
    crate::sync::python::class(typeid)
}

/// The exposed names of CPython's proxies for the built-in typeids: see `sync::python`.
pub(super) fn python_names(typeid: &str) -> &'static [&'static str] {
    crate::sync::python::exposed(typeid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name a CPython proxy of a built-in exposes translates onto a method the built-in's
    /// Rust type exposes: the CPython names and the `#[shared]` impls cannot disagree.
    #[test]
    fn every_python_name_reaches_an_exposed_rust_method() {
        let registry = crate::sync::registry();
        let mut checked = 0;
        for typeid in registry.typeids() {
            let entry = registry.get(&typeid).expect("a registered typeid");
            for name in python_names(&typeid) {
                // One argument, for the methods that need one (a key, an index, an item).
                let args = vec![Value::Int(0)];
                let Ok(translated) = translate(&typeid, name, args, Vec::new()) else {
                    continue;
                };
                let found = entry.method(translated.method);
                assert!(
                    matches!(found, Some((_, true))),
                    "CPython's {typeid}.{name} translates to {}, which {} does not expose",
                    translated.method,
                    entry.type_name
                );
                checked += 1;
            }
        }
        assert!(checked > 60, "only {checked} names translated");
    }
}
