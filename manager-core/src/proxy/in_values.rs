//! Proxies inside values.
//!
//! A proxy serialises as its token, under a newtype name that `value::to_value` recognises, so a
//! proxy stored in a shared list is a `Value::Proxy`. Decoding a proxy needs a connection: inside
//! `decode_value` (a typed container proxy decoding what the server returned) it takes over the
//! reference the server handed out to that connection; anywhere else (the arguments of a spawned
//! process) it connects to the token's server with this process's authkey and takes a reference
//! of its own.

use serde::Serialize;

use super::{proxy_from, BaseProxy};
use crate::client::Connection;
use crate::error::Error;
use crate::wire::{Request, Token};

thread_local! {
    static SCOPE: std::cell::RefCell<Option<DecodeScope>> = const { std::cell::RefCell::new(None) };
}

struct DecodeScope {
    conn: Connection,
    /// The objects whose handed-out reference a decoded proxy took over, one entry each.
    adopted: Vec<u64>,
}

impl Serialize for BaseProxy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(crate::value::TOKEN_NEWTYPE, &*self.token)
    }
}

impl<'de> crate::value::Carried<'de> for Token {
    fn read<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Token, D::Error> {
        serde::Deserialize::deserialize(deserializer)
    }
}

impl<'de> serde::Deserialize<'de> for BaseProxy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token: Token =
            crate::value::read_newtype(deserializer, crate::value::TOKEN_NEWTYPE, "a proxy")?;
        let adopted = SCOPE.with(|scope| {
            let mut scope = scope.borrow_mut();
            match scope.as_mut() {
                Some(scope) if scope.conn.server_address() == &token.address => {
                    scope.adopted.push(token.id);
                    Some(BaseProxy::from_token(scope.conn.clone(), token.clone()))
                }
                _ => None,
            }
        });
        match adopted {
            Some(proxy) => Ok(proxy),
            None => attach_elsewhere(&token).map_err(serde::de::Error::custom),
        }
    }
}

thread_local! {
    /// Why the last proxy decoded on this thread could not reach its server, with the text
    /// serde carried it under: the decode error that follows is reported as this error.
    static ATTACH_FAILURE: std::cell::RefCell<Option<(String, Error)>> =
        const { std::cell::RefCell::new(None) };
}

/// The error a proxy met reaching its server while a value was decoded on this thread, if the
/// decoder's message `message` carries it: the real cause of that decode failure (a TLS
/// configuration missing, a wrong authkey, a token from an earlier server run), which
/// [`Error::decode`] reports instead of a decode error.
pub(crate) fn take_attach_failure(message: &str) -> Option<Error> {
    /// What postcard says of any error raised inside a `Deserialize` (it keeps no text).
    const POSTCARD_CUSTOM: &str = "Serde Deserialization Error";
    let (text, error) = ATTACH_FAILURE.with(|failure| failure.borrow_mut().take())?;
    (message.contains(&text) || message == POSTCARD_CUSTOM).then_some(error)
}

/// Takes a reference to `token`'s object over this process's connection to its server.
fn attach_elsewhere(token: &Token) -> Result<BaseProxy, Error> {
    let attached = crate::client::in_blocking_region(|| {
        let conn = crate::client::shared_connection(&token.address)?;
        let response = conn.request_blocking(Connection::attach_frame(token))?;
        proxy_from(&conn, response, "attach")
    });
    let failure = attached
        .as_ref()
        .err()
        .map(|e| (e.to_string(), e.duplicate()));
    ATTACH_FAILURE.with(|slot| *slot.borrow_mut() = failure);
    attached
}

/// Decodes a value returned by a built-in type into `T`. Proxies inside it take over the
/// references the server handed out to `conn`; references nobody took over are released.
pub fn decode_value<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    value: crate::value::Value,
) -> Result<T, Error> {
    let tokens: Vec<u64> = value
        .tokens()
        .into_iter()
        .filter(|t| &t.address == conn.server_address())
        .map(|t| t.id)
        .collect();
    if tokens.is_empty() {
        return crate::value::from_value(value)
            .map_err(|e| Error::decode(std::any::type_name::<T>(), e));
    }
    let previous = SCOPE.with(|scope| {
        scope.borrow_mut().replace(DecodeScope {
            conn: conn.clone(),
            adopted: Vec::new(),
        })
    });
    let decoded = crate::value::from_value(value);
    let scope = SCOPE.with(|scope| std::mem::replace(&mut *scope.borrow_mut(), previous));
    let mut adopted = scope.map(|s| s.adopted).unwrap_or_default();
    for id in tokens {
        match adopted.iter().position(|a| *a == id) {
            Some(i) => {
                adopted.swap_remove(i);
            }
            None => conn.notify(&Request::DecRef { object: id }),
        }
    }
    decoded.map_err(|e| Error::decode(std::any::type_name::<T>(), e))
}
