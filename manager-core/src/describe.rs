//! What a server serves, typeid by typeid: the answer to `describe()` and
//! `manager info --types`.
//!
//! Everything comes from what `#[shared]` already knows: the method table
//! ([`crate::object::MethodDesc`]: names, parameters, receiver, `async`, `method_to_typeid`) and
//! [`MethodDoc`] (the parameters' and result's types as written, the first line of each doc
//! comment's summary), joined with the registration (`exposed`, `method_to_typeid` overrides, create
//! method, factory parameters).

use serde::{Deserialize, Serialize};

use crate::object::Receiver;
use crate::registry::{Entry, Source};

/// What `#[shared]` records of a method beyond its [`crate::object::MethodDesc`], for
/// descriptions: one per method, in the same order.
#[derive(Debug, Clone, Copy)]
pub struct MethodDoc {
    /// Each parameter's type, as written.
    pub param_types: &'static [&'static str],
    /// The return type, as written (`()` when there is none).
    pub returns: &'static str,
    /// The summary of the method's doc comment (its first paragraph); empty without one.
    pub doc: &'static str,
}

/// One typeid a server serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo {
    /// The typeid.
    pub typeid: String,
    /// The Rust type of its objects.
    pub type_name: String,
    /// Whether clients may create objects of it.
    pub create_method: bool,
    /// How creates make an object: `"shared"` (one instance for all), `"factory"`, or `"none"`
    /// (objects only come from `method_to_typeid` results).
    pub source: String,
    /// The factory's parameter names, when the registration names them.
    pub params: Option<Vec<String>>,
    /// The methods clients may call, in the impl block's order.
    pub methods: Vec<MethodInfo>,
    /// The events its objects emit (none yet: a place for them).
    pub events: Vec<EventInfo>,
}

/// One exposed method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// The method's name.
    pub name: String,
    /// Its parameters (the call context is not one: it does not travel).
    pub params: Vec<ParamInfo>,
    /// Its return type, as written (`()` when there is none).
    pub returns: String,
    /// `"&self"` or `"&mut self"`.
    pub receiver: String,
    /// Whether it is an `async fn`.
    pub is_async: bool,
    /// Whether it is declared quick (`#[shared(quick = [...])]`) and still runs so: the server
    /// runs it where it reads the request.
    pub quick: bool,
    /// The typeid its result becomes an object of, when it is mapped (`method_to_typeid`).
    pub method_to_typeid: Option<String>,
    /// The summary of its doc comment (its first paragraph); empty without one.
    pub doc: String,
}

/// One parameter of a method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// Its name.
    pub name: String,
    /// Its type, as written; empty when the type was not recorded (a hand-written `Shared`).
    pub ty: String,
}

/// One event a typeid's objects emit (for the events to come: none are described yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// The event's name.
    pub name: String,
    /// The type of its value, as written.
    pub ty: String,
    /// The summary of its doc comment.
    pub doc: String,
}

/// The description of one registration.
pub(crate) fn describe(entry: &Entry) -> TypeInfo {
    let methods = entry
        .methods
        .iter()
        .enumerate()
        .filter(|(index, _)| entry.exposed[*index])
        .map(|(index, method)| {
            let doc = entry.docs.get(index);
            let params = method
                .params
                .iter()
                .enumerate()
                .map(|(i, name)| ParamInfo {
                    name: name.to_string(),
                    ty: doc
                        .and_then(|d| d.param_types.get(i))
                        .map_or_else(String::new, |ty| ty.to_string()),
                })
                .collect();
            MethodInfo {
                name: method.name.to_string(),
                params,
                returns: doc.map_or(method.returns_name, |d| d.returns).to_string(),
                receiver: match method.receiver {
                    Receiver::Shared => "&self",
                    Receiver::Exclusive => "&mut self",
                }
                .to_string(),
                is_async: method.is_async,
                quick: entry.is_quick(index),
                method_to_typeid: entry.method_to_typeid[index].as_deref().map(str::to_string),
                doc: doc.map_or("", |d| d.doc).to_string(),
            }
        })
        .collect();
    TypeInfo {
        typeid: entry.typeid.to_string(),
        type_name: entry.type_name.to_string(),
        create_method: entry.create_method,
        source: match entry.source {
            Source::Shared(_) => "shared",
            Source::Factory(_) => "factory",
            Source::None => "none",
        }
        .to_string(),
        params: entry.params.as_ref().map(|p| p.to_vec()),
        methods,
        events: Vec::new(),
    }
}
