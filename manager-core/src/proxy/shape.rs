//! The shapes of a call's reply: how the server's answer becomes what the caller gets.
//!
//! Every proxy call goes through one primitive per direction, [`BaseProxy::call`] and
//! [`BaseProxy::call_blocking`], named by the shape of its reply, so deadlines, cancellation
//! and the blocking fast path are the same for all of them:
//!
//! | shape | the method returns | the call returns |
//! |---|---|---|
//! | [`Plain<T>`] | `T` | `T` |
//! | [`Fallible<T, E>`] | `Result<T, E>` | `Result<T, E>` (the method's `Err` typed) |
//! | [`Mapped<P>`] | a `method_to_typeid` result | the proxy `P` to the new object |
//! | [`MappedFallible<P, E>`] | `Result<_, E>`, mapped | `Result<P, E>` |
//! | [`Checked<T, E>`] | `Result<T, E>`, `E` [`RemoteError`] by default | `T`, the error as an [`Error`] |
//! | [`Dynamic`] | anything | a [`CallResult`]: the value undecoded, or a proxy |
//! | [`ByteVec`] | `Vec<u8>` | `Vec<u8>`, taken whole where it came so (see its doc) |
//!
//! [`Fallible`] and [`MappedFallible`] are one shape, [`OrRaised<S, E>`]: a reply the method
//! raised is its `Err(E)`, any other reply is read as the shape `S` reads it.
//!
//! Each is a type-level name only; none is ever built.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{BaseProxy, Proxy};
use crate::client::Response;
use crate::error::{Error, RemoteError};
use crate::wire::{self, Reply};

/// How a reply becomes a call's output (see the [module documentation](self)).
pub trait Shape {
    /// What the call returns, inside `Result<_, Error>`.
    type Output;

    /// Turns the server's `response` to `proxy.method(...)` into the output.
    fn from_response(
        proxy: &BaseProxy,
        method: &str,
        response: Response,
    ) -> Result<Self::Output, Error>;
}

/// A value of type `T`.
#[derive(Debug)]
pub struct Plain<T>(PhantomData<fn() -> T>);

/// A method's `Result<_, E>`: a reply raised by the method arrives as the inner `Err(E)`,
/// anything else as the shape `S` reads it. [`Fallible`] and [`MappedFallible`] are its two
/// uses.
#[derive(Debug)]
pub struct OrRaised<S, E>(PhantomData<fn() -> (S, E)>);

/// A method's `Result<T, E>`: its `Err` arrives typed as the inner `Err`.
pub type Fallible<T, E> = OrRaised<Plain<T>, E>;

/// A result the server turns into a new object (`method_to_typeid`): a proxy `P` to it.
#[derive(Debug)]
pub struct Mapped<P>(PhantomData<fn() -> P>);

/// A mapped method returning `Result<_, E>`: `Ok` is a proxy `P`.
pub type MappedFallible<P, E> = OrRaised<Mapped<P>, E>;

/// A method whose errors are [`RemoteError`]s (the built-in types' methods), or another `E`
/// that converts into [`Error`]: `Err` becomes that `Error` ([`Error::Remote`]), beside the
/// errors of the call itself.
#[derive(Debug)]
pub struct Checked<T, E = RemoteError>(PhantomData<fn() -> (T, E)>);

/// A `Vec<u8>` the method returned. Through shared memory a large one is copied out of the
/// server's arena straight into a buffer of its own, which is the call's output as it is (no
/// second copy); anything else is decoded as [`Plain`]`<ByteBuf>` is.
#[derive(Debug)]
pub struct ByteVec;

impl Shape for ByteVec {
    type Output = Vec<u8>;

    fn from_response(
        proxy: &BaseProxy,
        method: &str,
        mut response: Response,
    ) -> Result<Vec<u8>, Error> {
        if response.reply == Reply::Value {
            if let Some(bytes) = response.take_byte_string() {
                return Ok(bytes);
            }
        }
        Plain::<serde_bytes::ByteBuf>::from_response(proxy, method, response)
            .map(serde_bytes::ByteBuf::into_vec)
    }
}

/// Whatever came back, value or proxy, undecoded.
#[derive(Debug)]
pub struct Dynamic;

/// What a [`Dynamic`] call returned: a value still in wire form, or a proxy.
#[derive(Debug)]
pub enum CallResult {
    /// A value; decode it with [`Payload::decode`].
    Value(Payload),
    /// A new object, made by a `method_to_typeid` mapping.
    Proxy(BaseProxy),
}

/// A returned value in wire form, decoded on demand into any type.
#[derive(Debug)]
pub struct Payload(Response);

impl Payload {
    /// Decodes the value as a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        wire::decode_payload(self.0.payload(), std::any::type_name::<T>())
    }
}

impl<T: DeserializeOwned> Shape for Plain<T> {
    type Output = T;

    fn from_response(proxy: &BaseProxy, method: &str, response: Response) -> Result<T, Error> {
        match &response.reply {
            Reply::Value => decode(response.payload(), || what(proxy, method)),
            Reply::Raised { type_name } => Err(Error::Protocol(format!(
                "{}.{method} returned Err({type_name}); call it through a proxy method that returns a Result",
                proxy.token.typeid
            ))),
            _ => Err(unexpected(proxy, response, method, "a value")),
        }
    }
}

impl<S: Shape, E: DeserializeOwned> Shape for OrRaised<S, E> {
    type Output = Result<S::Output, E>;

    fn from_response(
        proxy: &BaseProxy,
        method: &str,
        response: Response,
    ) -> Result<Result<S::Output, E>, Error> {
        match &response.reply {
            Reply::Raised { type_name } => Ok(Err(raised(proxy, method, type_name, &response)?)),
            _ => S::from_response(proxy, method, response).map(Ok),
        }
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned + Into<Error>> Shape for Checked<T, E> {
    type Output = T;

    fn from_response(proxy: &BaseProxy, method: &str, response: Response) -> Result<T, Error> {
        Fallible::<T, E>::from_response(proxy, method, response)?.map_err(Into::into)
    }
}

impl<P: Proxy> Shape for Mapped<P> {
    type Output = P;

    fn from_response(proxy: &BaseProxy, method: &str, response: Response) -> Result<P, Error> {
        match response.reply {
            Reply::Proxy(token) => Ok(P::from_base(BaseProxy::from_token(
                proxy.conn.clone(),
                token,
            ))),
            _ => Err(unexpected(proxy, response, method, "a proxy")),
        }
    }
}

impl Shape for Dynamic {
    type Output = CallResult;

    fn from_response(
        proxy: &BaseProxy,
        method: &str,
        response: Response,
    ) -> Result<CallResult, Error> {
        match response.reply {
            Reply::Value => Ok(CallResult::Value(Payload(response))),
            Reply::Proxy(token) => Ok(CallResult::Proxy(BaseProxy::from_token(
                proxy.conn.clone(),
                token,
            ))),
            _ => Err(unexpected(proxy, response, method, "a value or a proxy")),
        }
    }
}

/// The error `E` a method raised (a `Reply::Raised` named `type_name`).
fn raised<E: DeserializeOwned>(
    proxy: &BaseProxy,
    method: &str,
    type_name: &str,
    response: &Response,
) -> Result<E, Error> {
    decode(response.payload(), || {
        format!("the {type_name} raised by {}.{method}", proxy.token.typeid)
    })
}

fn what(proxy: &BaseProxy, method: &str) -> String {
    format!("the result of {}.{method}", proxy.token.typeid)
}

/// Decodes a payload, naming it by `what` if it does not decode (the name is made only then:
/// formatting it for every call cost more than decoding a small result).
fn decode<'a, T: Deserialize<'a>>(
    payload: &'a [u8],
    what: impl FnOnce() -> String,
) -> Result<T, Error> {
    wire::decode_payload(payload, "").map_err(|e| match e {
        Error::Decode { message, .. } => Error::Decode {
            what: what(),
            message,
        },
        other => other,
    })
}

/// The error for a reply of the wrong kind. A proxy that nobody expected is released.
fn unexpected(proxy: &BaseProxy, response: Response, method: &str, expected: &str) -> Error {
    match response.reply {
        Reply::Error(e) => Error::Remote(e),
        Reply::Proxy(token) => {
            let typeid = token.typeid.clone();
            drop(BaseProxy::from_token(proxy.conn.clone(), token));
            Error::Protocol(format!(
                "{}.{method} returned a proxy to a {typeid:?} where {expected} was expected (the server maps it with method_to_typeid; declare the mapping in #[shared] too, or call it with the Dynamic shape)",
                proxy.token.typeid
            ))
        }
        other => Error::Protocol(format!(
            "{}.{method}: expected {expected}, got {other:?}",
            proxy.token.typeid
        )),
    }
}
