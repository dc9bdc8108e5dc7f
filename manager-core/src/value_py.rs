//! The [`Value`](crate::value::Value) kinds only Python has: an [`Opaque`] object kept as its
//! pickle, and the helpers of `Value::BigInt` (integers beyond `i128`).
//!
//! A CPython client may store anything it can pickle: a `datetime`, a `Decimal`, a dataclass.
//! The server never builds such an object (it would have to import and run the client's
//! code); it keeps the pickle that builds it, returns it unchanged to every CPython client,
//! and compares and hashes it by those bytes, so that it can be a dict key (two equal
//! `datetime`s pickle alike). A Rust client sees an [`Opaque`]: its class name and its pickle,
//! which it may hand back as it got it; reading one as any other Rust type is an error that
//! names the class.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

#[cfg(feature = "python")]
use crate::python::pickle::{self, PickleError, PyValue};

/// A Python object the server keeps as the pickle that builds it, never building it.
///
/// Made by the server from what a CPython client sent (or by [`Opaque::from_pickle`]). Two
/// opaque values are equal when their pickles are: equal `datetime`s, `UUID`s, `Fraction`s
/// and instances of plain classes pickle alike, but objects Python calls equal with different
/// states do not (`Decimal('1.5')` and `Decimal('1.50')` are two keys here, one in Python),
/// and an opaque value never equals a plain one (`Fraction(1)` is not `1` here).
#[derive(Clone)]
pub struct Opaque {
    class: String,
    /// A standalone protocol-4 pickle without memo or frame: `PROTO 4`, the opcodes, `STOP`.
    pickle: Vec<u8>,
}

impl Opaque {
    /// Checks a pickle of one object (any protocol from 2 to 5) and keeps it in the server's
    /// form. Nothing in it is imported or called. Plain data (an int, a list) is not an
    /// opaque object and is refused, as is anything the codec refuses (persistent ids,
    /// out-of-band buffers, recursive structures).
    #[cfg(feature = "python")]
    pub fn from_pickle(data: &[u8]) -> Result<Opaque, PickleError> {
        let options = pickle::DecodeOptions {
            opaque_globals: true,
            ..Default::default()
        };
        match pickle::decode_with(data, &options)? {
            PyValue::Object(object) => Opaque::of_object(&object),
            PyValue::Opaque(opaque) => Ok(opaque),
            other => Err(PickleError::Invalid {
                offset: None,
                message: format!("a {} is plain data, not an opaque object", other.kind()),
            }),
        }
    }

    /// The opaque form of a decoded object: its class, and the pickle our encoder writes for
    /// it.
    #[cfg(feature = "python")]
    pub(crate) fn of_object(object: &pickle::PyObject) -> Result<Opaque, PickleError> {
        let class = object.class_name();
        let body = pickle::encode_body(&PyValue::Object(Box::new(object.clone())))?;
        let mut pickle = Vec::with_capacity(body.len() + 3);
        pickle.extend_from_slice(&[0x80, 4]);
        pickle.extend_from_slice(&body);
        pickle.push(b'.');
        Ok(Opaque { class, pickle })
    }

    /// The opaque value the opcodes `body` build, of class `class`.
    #[cfg(feature = "python")]
    pub(crate) fn from_body(class: &str, body: &[u8]) -> Opaque {
        let mut pickle = Vec::with_capacity(body.len() + 3);
        pickle.extend_from_slice(&[0x80, 4]);
        pickle.extend_from_slice(body);
        pickle.push(b'.');
        Opaque {
            class: class.to_string(),
            pickle,
        }
    }

    /// The object's class as the pickle names it: `datetime.datetime`, `__main__.Point`.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// The class's own name, without its module: `datetime`, `Point`.
    pub fn type_name(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }

    /// A standalone pickle of the object: `pickle.loads` of it in Python builds the object.
    pub fn pickle(&self) -> &[u8] {
        &self.pickle
    }

    /// The opcodes that build the object, without `PROTO` and `STOP`: what goes inside a
    /// larger pickle.
    #[cfg(feature = "python")]
    pub(crate) fn body(&self) -> &[u8] {
        &self.pickle[2..self.pickle.len() - 1]
    }
}

impl PartialEq for Opaque {
    fn eq(&self, other: &Self) -> bool {
        self.pickle == other.pickle
    }
}

impl Eq for Opaque {}

impl Hash for Opaque {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pickle.hash(state);
    }
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opaque({}, {} bytes)", self.class, self.pickle.len())
    }
}

impl fmt::Display for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} object, kept as its pickle>", self.class)
    }
}

/// How an [`Opaque`] travels between Rust peers: its class and pickle, checked again when
/// received.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Opaque")]
struct OpaqueParts {
    class: String,
    #[serde(with = "serde_bytes")]
    pickle: Vec<u8>,
}

impl Serialize for Opaque {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        OpaqueParts {
            class: self.class.clone(),
            pickle: self.pickle.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Opaque {
    /// Received bytes are decoded and written again, so that what reaches a CPython client
    /// inside a larger pickle is always one well-formed object.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Opaque, D::Error> {
        let parts = OpaqueParts::deserialize(deserializer)?;
        #[cfg(feature = "python")]
        return Opaque::from_pickle(&parts.pickle).map_err(serde::de::Error::custom);
        // Without CPython support nothing here reads the pickle: it is kept as it came, and
        // checked by the server it goes back to before any CPython client sees it.
        #[cfg(not(feature = "python"))]
        Ok(Opaque {
            class: parts.class,
            pickle: parts.pickle,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Integers beyond i128
// ---------------------------------------------------------------------------------------------

/// The shortest little-endian two's complement form of an integer (as pickle's `LONG1` and
/// `LONG4` write it).
#[cfg(feature = "python")]
pub(crate) fn shortest(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.len() > 1 {
        let (last, prev) = (bytes[bytes.len() - 1], bytes[bytes.len() - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            bytes.pop();
        } else {
            break;
        }
    }
    bytes
}

/// Whether a little-endian two's complement integer is negative.
pub(crate) fn is_negative(bytes: &[u8]) -> bool {
    bytes.last().is_some_and(|b| b & 0x80 != 0)
}

/// The magnitude of a little-endian two's complement integer, little-endian.
fn magnitude(bytes: &[u8]) -> Vec<u8> {
    if !is_negative(bytes) {
        return bytes.to_vec();
    }
    // Two's complement negation: invert, add one.
    let mut out: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for b in out.iter_mut() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            break;
        }
    }
    out
}

/// The most digits [`big_decimal`] writes: Python's own limit for converting an int to a
/// str (`sys.get_int_max_str_digits`, 4300 by default).
pub(crate) const MAX_INT_DIGITS: usize = 4300;

/// The decimal digits of a little-endian two's complement integer, or `None` past
/// [`MAX_INT_DIGITS`] (the conversion is quadratic; Python refuses such ints too).
pub(crate) fn big_decimal(bytes: &[u8]) -> Option<String> {
    // 4300 digits are at most 14,285 bits.
    if bytes.len() > 1800 {
        return None;
    }
    let mut limbs: Vec<u32> = magnitude(bytes)
        .chunks(4)
        .map(|c| {
            let mut word = [0u8; 4];
            word[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(word)
        })
        .collect();
    let mut groups = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rest = 0u64;
        for limb in limbs.iter_mut().rev() {
            let current = (rest << 32) | u64::from(*limb);
            *limb = (current / 1_000_000_000) as u32;
            rest = current % 1_000_000_000;
        }
        groups.push(rest as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut text = String::new();
    if is_negative(bytes) {
        text.push('-');
    }
    match groups.split_last() {
        None => text.push('0'),
        Some((first, others)) => {
            text.push_str(&first.to_string());
            for group in others.iter().rev() {
                text.push_str(&format!("{group:09}"));
            }
        }
    }
    (text.trim_start_matches('-').len() <= MAX_INT_DIGITS).then_some(text)
}

/// An integer's value as the nearest `f64` (infinite past its range), for ordering.
pub(crate) fn big_to_f64(bytes: &[u8]) -> f64 {
    let magnitude = magnitude(bytes)
        .iter()
        .rev()
        .fold(0.0f64, |acc, &b| acc * 256.0 + f64::from(b));
    if is_negative(bytes) {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_integers_print_in_decimal() {
        // 2**200 and -(2**130), as pickle's LONG1 carries them.
        let mut two_200 = vec![0u8; 25];
        two_200.push(1);
        assert_eq!(
            big_decimal(&shortest(two_200.clone())).unwrap(),
            "1606938044258990275541962092341162602522202993782792835301376"
        );
        let mut minus = vec![0u8; 16];
        minus.push(0xfc);
        assert_eq!(
            big_decimal(&minus).unwrap(),
            "-1361129467683753853853498429727072845824"
        );
        assert_eq!(big_decimal(&[0]).unwrap(), "0");
        assert!(big_to_f64(&two_200) > 1.6e60);
        assert!(big_to_f64(&minus) < -1.3e39);
        assert!(big_decimal(&vec![0x7f; 4000]).is_none());
    }

    #[test]
    fn an_opaque_value_is_its_pickle_and_plain_data_is_not_one() {
        // pickle.dumps(decimal.Decimal('1.5'), 4), with its frame.
        let data = b"\x80\x04\x95\x1b\x00\x00\x00\x00\x00\x00\x00\x8c\x07decimal\x8c\x07Decimal\x93\x8c\x031.5\x85R.";
        let opaque = Opaque::from_pickle(data).unwrap();
        assert_eq!(opaque.class(), "decimal.Decimal");
        assert_eq!(opaque.type_name(), "Decimal");
        assert_eq!(
            opaque.pickle(),
            b"\x80\x04\x8c\x07decimal\x8c\x07Decimal\x93\x8c\x031.5\x85R."
        );
        assert_eq!(Opaque::from_pickle(opaque.pickle()).unwrap(), opaque);
        assert!(Opaque::from_pickle(b"\x80\x04K\x01.").is_err());
        assert!(Opaque::from_pickle(b"\x80\x04\x8c\x01x").is_err());
    }
}
