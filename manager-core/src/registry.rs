//! The server's registry: what each typeid is, how objects of it are made, and which of its
//! methods clients may call.
//!
//! This is the server half of Python's `BaseManager.register(typeid, callable, proxytype,
//! exposed, method_to_typeid, create_method)`. The client half (the proxy type, and whether a
//! typed create method exists) is [`crate::Typeid`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::context::CallContext;
use crate::error::{Error, RemoteError};
use crate::object::{decode_args, referent, MethodDesc, Referent, Shared};

type FactoryFn = Arc<
    dyn Fn(&mut dyn erased_serde::Deserializer<'_>, &CallContext) -> Result<Referent, FactoryError>
        + Send
        + Sync,
>;

/// Why a factory made no object.
pub(crate) enum FactoryError {
    /// The arguments did not decode into the factory's parameter types.
    BadArguments(String),
    /// The factory refused the arguments.
    Refused(RemoteError),
}
type ConvertFn = Arc<dyn Fn(Box<dyn Any + Send>) -> Result<Referent, String> + Send + Sync>;

/// How clients get objects of a typeid.
#[derive(Clone)]
pub(crate) enum Source {
    /// One object shared by every client (Python's `callable=lambda: obj`).
    Shared(Referent),
    /// A constructor called for every create, with the client's arguments.
    Factory(FactoryFn),
    /// No constructor: objects only come from `method_to_typeid` results.
    None,
}

/// The conversion that turns a `method_to_typeid` result into a referent of this typeid.
#[derive(Clone)]
pub(crate) struct FromResult {
    pub(crate) input: TypeId,
    pub(crate) input_name: &'static str,
    pub(crate) convert: ConvertFn,
}

/// One typeid's registration, with the referent type erased.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) typeid: Arc<str>,
    pub(crate) type_name: &'static str,
    pub(crate) methods: &'static [MethodDesc],
    /// The methods' types and doc lines, for descriptions (may be empty).
    pub(crate) docs: &'static [crate::describe::MethodDoc],
    pub(crate) exposed: Vec<bool>,
    pub(crate) method_to_typeid: Vec<Option<Arc<str>>>,
    pub(crate) create_method: bool,
    /// The names of the factory's parameters, when given ([`Register::params`]).
    #[cfg_attr(
        not(feature = "python"),
        allow(dead_code, reason = "used by CPython clients' connections")
    )]
    pub(crate) params: Option<Arc<[String]>>,
    pub(crate) source: Source,
    pub(crate) from_result: FromResult,
    /// Per method: whether it runs as a quick call (`#[shared(quick = [...])]`), until it is
    /// caught taking too long for one (see `server::quick`).
    pub(crate) quick: Arc<[AtomicBool]>,
}

impl Entry {
    /// Whether method `index` runs as a quick call.
    pub(crate) fn is_quick(&self, index: usize) -> bool {
        self.quick
            .get(index)
            .is_some_and(|quick| quick.load(Ordering::Relaxed))
    }

    /// Makes method `index` run on worker threads from now on; true the first time.
    pub(crate) fn demote(&self, index: usize) -> bool {
        self.quick
            .get(index)
            .is_some_and(|quick| quick.swap(false, Ordering::Relaxed))
    }

    /// The index of `method` if the type has it, and whether it is exposed.
    pub(crate) fn method(&self, method: &str) -> Option<(usize, bool)> {
        self.methods
            .iter()
            .position(|m| m.name == method)
            .map(|i| (i, self.exposed[i]))
    }

    /// The names of the exposed methods.
    pub(crate) fn exposed_names(&self) -> Vec<String> {
        self.methods
            .iter()
            .zip(&self.exposed)
            .filter(|(_, exposed)| **exposed)
            .map(|(m, _)| m.name.to_string())
            .collect()
    }
}

/// The registration of one typeid, built with the knobs of Python's `register`.
///
/// ```
/// # use manager_core::{Register, Registry};
/// # fn demo<Pair: manager_core::Shared>(pair: Pair) -> manager_core::Result<()> {
/// let mut registry = Registry::new();
/// registry.register(Register::shared("get_pair", pair).exposed(["get_x"]))?;
/// # Ok(()) }
/// ```
#[must_use = "a registration does nothing until it is passed to Registry::register"]
pub struct Register<T: Shared> {
    typeid: String,
    source: Source,
    exposed: Option<Vec<String>>,
    method_to_typeid: Vec<(String, String)>,
    create_method: Option<bool>,
    params: Option<Vec<String>>,
    from_result: FromResult,
    _type: PhantomData<fn() -> T>,
}

impl<T: Shared> fmt::Debug for Register<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Register")
            .field("typeid", &self.typeid)
            .field("exposed", &self.exposed)
            .field("method_to_typeid", &self.method_to_typeid)
            .field("create_method", &self.create_method)
            .finish_non_exhaustive()
    }
}

impl<T: Shared> Register<T> {
    fn with_source(typeid: impl Into<String>, source: Source) -> Self {
        Register {
            typeid: typeid.into(),
            source,
            exposed: None,
            method_to_typeid: Vec::new(),
            create_method: None,
            params: None,
            from_result: identity_conversion::<T>(),
            _type: PhantomData,
        }
    }

    /// One instance shared by every client: each create returns a proxy to the same object
    /// (Python's `register(typeid, callable=lambda: obj)`). It lives until the server stops.
    pub fn shared(typeid: impl Into<String>, value: T) -> Self {
        Self::with_source(typeid, Source::Shared(referent(value)))
    }

    /// A constructor called for every create with the client's arguments, decoded as `A` (a
    /// tuple for several arguments): Python's `register(typeid, Pair)` then `get_pair(1, 3)`.
    pub fn factory<A, F>(typeid: impl Into<String>, factory: F) -> Self
    where
        A: DeserializeOwned + 'static,
        F: Fn(A) -> T + Send + Sync + 'static,
    {
        Self::factory_with_context(typeid, move |args: A, _: &CallContext| Ok(factory(args)))
    }

    /// A factory that also sees the creating call's [`CallContext`] and may refuse the
    /// arguments with an error of its own (the built-in containers use it to keep the objects
    /// named by proxies among their initial items alive).
    pub fn factory_with_context<A, F>(typeid: impl Into<String>, factory: F) -> Self
    where
        A: DeserializeOwned + 'static,
        F: Fn(A, &CallContext) -> Result<T, RemoteError> + Send + Sync + 'static,
    {
        let make: FactoryFn = Arc::new(move |args, context| {
            let args: A = decode_args(args).map_err(|e| match e {
                crate::object::DispatchError::BadArguments(m) => FactoryError::BadArguments(m),
                crate::object::DispatchError::NoSuchMethod => {
                    FactoryError::BadArguments("no such method".into())
                }
            })?;
            factory(args, context)
                .map(referent)
                .map_err(FactoryError::Refused)
        });
        Self::with_source(typeid, Source::Factory(make))
    }

    /// A typeid with no constructor: its objects only come from the results of methods that
    /// `method_to_typeid` maps to it. Clients cannot create it.
    pub fn new(typeid: impl Into<String>) -> Self {
        Self::with_source(typeid, Source::None)
    }

    /// Narrows the methods clients may call to `names` (Python's `exposed`). Each name must be a
    /// method of the `#[shared]` impl block.
    pub fn exposed<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exposed = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Maps methods to typeids: the result of each such method becomes a new object of that
    /// typeid and the caller gets a proxy (Python's `method_to_typeid`). Overrides the mapping
    /// given in `#[shared(method_to_typeid = ...)]` for the same method.
    pub fn method_to_typeid<I, M, S>(mut self, mapping: I) -> Self
    where
        I: IntoIterator<Item = (M, S)>,
        M: Into<String>,
        S: Into<String>,
    {
        self.method_to_typeid
            .extend(mapping.into_iter().map(|(m, t)| (m.into(), t.into())));
        self
    }

    /// Whether clients may create objects of this typeid (Python's `create_method`). Defaults
    /// to true when the typeid has a shared instance or a factory.
    pub fn create_method(mut self, allowed: bool) -> Self {
        self.create_method = Some(allowed);
        self
    }

    /// Names the factory's parameters, in order, so that CPython clients may pass them by
    /// keyword (`manager.Pair(1, y=3)` for a factory of `(x, y)`); without it, a create with
    /// keyword arguments is a `TypeError` that says so. Rust clients pass arguments by
    /// position.
    pub fn params<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.params = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// How a `method_to_typeid` result of type `R` becomes a referent of this typeid: Python
    /// calls the target typeid's callable with the result, as the seed's `ItemWrapper(res)`.
    /// Without it, a result of type `T` itself becomes the referent.
    pub fn from_result<R, F>(mut self, convert: F) -> Self
    where
        R: Send + 'static,
        F: Fn(R) -> T + Send + Sync + 'static,
    {
        self.from_result = FromResult {
            input: TypeId::of::<R>(),
            input_name: std::any::type_name::<R>(),
            convert: Arc::new(move |value: Box<dyn Any + Send>| {
                value
                    .downcast::<R>()
                    .map(|r| referent(convert(*r)))
                    .map_err(|_| format!("expected a {}", std::any::type_name::<R>()))
            }),
        };
        self
    }

    fn into_entry(self) -> Result<Entry, Error> {
        let methods = T::METHODS;
        let exposed = match &self.exposed {
            None => vec![true; methods.len()],
            Some(names) => {
                let mut mask = vec![false; methods.len()];
                for name in names {
                    match methods.iter().position(|m| m.name == name.as_str()) {
                        Some(i) => mask[i] = true,
                        None => {
                            return Err(Error::Registry(format!(
                                "typeid {:?}: exposed names {name:?}, which is not a method of {} (its methods: {})",
                                self.typeid,
                                std::any::type_name::<T>(),
                                method_list(methods)
                            )))
                        }
                    }
                }
                mask
            }
        };
        let mut mapping: Vec<Option<Arc<str>>> = methods
            .iter()
            .map(|m| m.method_to_typeid.map(Arc::from))
            .collect();
        for (method, target) in &self.method_to_typeid {
            match methods.iter().position(|m| m.name == method.as_str()) {
                Some(i) if exposed[i] => mapping[i] = Some(Arc::from(target.as_str())),
                Some(_) => {
                    return Err(Error::Registry(format!(
                        "typeid {:?}: method_to_typeid maps {method:?}, which is not exposed",
                        self.typeid
                    )))
                }
                None => {
                    return Err(Error::Registry(format!(
                        "typeid {:?}: method_to_typeid maps {method:?}, which is not a method of {} (its methods: {})",
                        self.typeid,
                        std::any::type_name::<T>(),
                        method_list(methods)
                    )))
                }
            }
        }
        let has_source = !matches!(self.source, Source::None);
        let create_method = self.create_method.unwrap_or(has_source);
        if create_method && !has_source {
            return Err(Error::Registry(format!(
                "typeid {:?} has create_method(true) but neither a shared instance nor a factory",
                self.typeid
            )));
        }
        Ok(Entry {
            typeid: Arc::from(self.typeid.as_str()),
            type_name: std::any::type_name::<T>(),
            methods,
            docs: T::DOCS,
            exposed,
            method_to_typeid: mapping,
            create_method,
            params: self.params.map(Arc::from),
            source: self.source,
            from_result: self.from_result,
            quick: methods
                .iter()
                .map(|m| AtomicBool::new(m.quick && !m.is_async))
                .collect(),
        })
    }
}

fn identity_conversion<T: Shared>() -> FromResult {
    FromResult {
        input: TypeId::of::<T>(),
        input_name: std::any::type_name::<T>(),
        convert: Arc::new(|value: Box<dyn Any + Send>| {
            value
                .downcast::<T>()
                .map(|t| referent(*t))
                .map_err(|_| format!("expected a {}", std::any::type_name::<T>()))
        }),
    }
}

fn method_list(methods: &[MethodDesc]) -> String {
    methods
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every typeid a server knows, by name.
///
/// A registry is built by a function, so that a server started in a child process (see
/// [`crate::BaseManager::start`]) can build the same registry there.
#[derive(Clone, Default)]
pub struct Registry {
    entries: HashMap<Arc<str>, Arc<Entry>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.entries.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("typeids", &names).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a typeid. Fails if the typeid is already registered, or if `exposed` or
    /// `method_to_typeid` name methods the type does not have.
    pub fn register<T: Shared>(&mut self, registration: Register<T>) -> Result<&mut Self, Error> {
        let entry = registration.into_entry()?;
        if self.entries.contains_key(&entry.typeid) {
            return Err(Error::Registry(format!(
                "typeid {:?} is registered twice",
                &*entry.typeid
            )));
        }
        self.entries.insert(entry.typeid.clone(), Arc::new(entry));
        Ok(self)
    }

    /// The registered typeids, sorted.
    pub fn typeids(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// What each typeid is and offers (see [`crate::describe`]), sorted by typeid.
    pub fn describe(&self) -> Vec<crate::describe::TypeInfo> {
        let mut types: Vec<_> = self
            .entries
            .values()
            .map(|e| crate::describe::describe(e))
            .collect();
        types.sort_by(|a, b| a.typeid.cmp(&b.typeid));
        types
    }

    pub(crate) fn get(&self, typeid: &str) -> Option<&Arc<Entry>> {
        self.entries.get(typeid)
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.entries.values()
    }

    /// Checks what can only be checked with every typeid known: each `method_to_typeid` target
    /// exists and accepts the type the mapped method returns.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        for entry in self.entries.values() {
            for (method, target) in entry.methods.iter().zip(&entry.method_to_typeid) {
                let Some(target) = target else { continue };
                match self.entries.get(target) {
                    None => problems.push(format!(
                        "typeid {:?}: method {} is mapped to typeid {:?}, which is not registered",
                        &*entry.typeid, method.name, &**target
                    )),
                    Some(t) if t.from_result.input != (method.returns)() => problems.push(format!(
                        "typeid {:?}: method {} returns {}, but typeid {:?} is made from a {} (give it Register::from_result)",
                        &*entry.typeid,
                        method.name,
                        method.returns_name,
                        &**target,
                        t.from_result.input_name
                    )),
                    Some(_) => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.sort();
            Err(Error::Registry(problems.join("; ")))
        }
    }
}
