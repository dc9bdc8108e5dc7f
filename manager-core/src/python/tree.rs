//! The unpickler's fast path: a pickle that is a plain tree of data, decoded in one pass.
//!
//! What CPython clients send most (a request `(ident, methodname, args, kwds)` of strs, numbers
//! and small containers) uses no memo references, no globals and nothing that shares or
//! builds objects. Such a pickle needs neither the arena that keeps an object's identity
//! through memo references nor the second pass that builds values out of it: the values are
//! built on the stack as the opcodes come. Anything else (a memo reference, a global, a
//! `REDUCE`, a set, a str that is not UTF-8, a malformed pickle, nesting past the limit) makes
//! this path give up, and the general unpickler decodes the pickle from its start, with its
//! checks and its errors; so both paths give the same value for every pickle this one takes.

use super::pickle::{int_from_le, PyValue};

/// Decodes `data` if it is a plain tree no higher than `max_depth`; `None` otherwise (then the
/// general unpickler decides).
pub(super) fn decode_tree(data: &[u8], max_depth: usize) -> Option<PyValue> {
    let mut stack = Stack {
        values: Vec::with_capacity(8),
    };
    let mut marks = Marks {
        at: [0; MAX_MARKS],
        len: 0,
    };
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
        let end = pos.checked_add(n)?;
        let bytes = data.get(*pos..end)?;
        *pos = end;
        Some(bytes)
    };
    loop {
        let opcode = *take(&mut pos, 1)?.first()?;
        let floor = marks.last().copied().unwrap_or(0);
        match opcode {
            // PROTO
            0x80 => {
                if *take(&mut pos, 1)?.first()? > 5 {
                    return None;
                }
            }
            // FRAME
            0x95 => {
                let len = u64::from_le_bytes(take(&mut pos, 8)?.try_into().ok()?);
                if len > (data.len() - pos) as u64 {
                    return None;
                }
            }
            // STOP
            b'.' => {
                if pos != data.len() || stack.len() <= floor {
                    return None;
                }
                let (value, height) = stack.pop()?;
                return (height <= max_depth).then_some(value);
            }
            b'(' => marks.push(stack.len())?,
            // MEMOIZE, BINPUT, LONG_BINPUT: with no reference to come (a reference gives up),
            // storing is nothing.
            0x94 | b'q' | b'r' => {
                if stack.len() <= floor {
                    return None;
                }
                let n = match opcode {
                    b'q' => 1,
                    b'r' => 4,
                    _ => 0,
                };
                take(&mut pos, n)?;
            }
            b'N' => stack.leaf(PyValue::None),
            0x88 => stack.leaf(PyValue::Bool(true)),
            0x89 => stack.leaf(PyValue::Bool(false)),
            b'K' => {
                let v = take(&mut pos, 1)?[0];
                stack.leaf(PyValue::Int(i128::from(v)));
            }
            b'M' => {
                let v = u16::from_le_bytes(take(&mut pos, 2)?.try_into().ok()?);
                stack.leaf(PyValue::Int(i128::from(v)));
            }
            b'J' => {
                let v = i32::from_le_bytes(take(&mut pos, 4)?.try_into().ok()?);
                stack.leaf(PyValue::Int(i128::from(v)));
            }
            // LONG1 within i128 (a bigger one is the general path's).
            0x8a => {
                let n = usize::from(take(&mut pos, 1)?[0]);
                let v = int_from_le(take(&mut pos, n)?).ok()?;
                stack.leaf(PyValue::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(take(&mut pos, 8)?.try_into().ok()?);
                stack.leaf(PyValue::Float(v));
            }
            // SHORT_BINUNICODE, BINUNICODE
            0x8c | b'X' => {
                let n = if opcode == 0x8c {
                    usize::from(take(&mut pos, 1)?[0])
                } else {
                    u32::from_le_bytes(take(&mut pos, 4)?.try_into().ok()?) as usize
                };
                let s = std::str::from_utf8(take(&mut pos, n)?).ok()?;
                stack.leaf(PyValue::Str(s.to_owned()));
            }
            // SHORT_BINBYTES, BINBYTES
            b'C' | b'B' => {
                let n = if opcode == b'C' {
                    usize::from(take(&mut pos, 1)?[0])
                } else {
                    u32::from_le_bytes(take(&mut pos, 4)?.try_into().ok()?) as usize
                };
                stack.leaf(PyValue::Bytes(take(&mut pos, n)?.to_vec()));
            }
            b')' => stack.leaf(PyValue::Tuple(Vec::new())),
            b']' => stack.leaf(PyValue::List(Vec::new())),
            b'}' => stack.leaf(PyValue::Dict(Vec::new())),
            // TUPLE1, TUPLE2, TUPLE3
            0x85..=0x87 => {
                let n = usize::from(opcode - 0x84);
                if stack.len() < floor + n {
                    return None;
                }
                let (items, height) = stack.split_off(stack.len() - n);
                stack.push(PyValue::Tuple(items), height);
            }
            // TUPLE, LIST
            b't' | b'l' => {
                let (items, height) = stack.split_off(marks.pop()?);
                let value = if opcode == b't' {
                    PyValue::Tuple(items)
                } else {
                    PyValue::List(items)
                };
                stack.push(value, height);
            }
            // APPEND, APPENDS
            b'a' | b'e' => {
                let (items, height) = if opcode == b'a' {
                    if stack.len() <= floor + 1 {
                        return None;
                    }
                    stack.split_off(stack.len() - 1)
                } else {
                    let items = stack.split_off(marks.pop()?);
                    if stack.len() <= marks.last().copied().unwrap_or(0) {
                        return None;
                    }
                    items
                };
                let (list, list_height) = stack.top()?;
                let PyValue::List(existing) = list else {
                    return None;
                };
                existing.extend(items);
                *list_height = (*list_height).max(height);
            }
            // SETITEM, SETITEMS, DICT
            b's' | b'u' | b'd' => {
                let (items, height) = if opcode == b's' {
                    if stack.len() <= floor + 2 {
                        return None;
                    }
                    stack.split_off(stack.len() - 2)
                } else {
                    stack.split_off(marks.pop()?)
                };
                if items.len() % 2 == 1 {
                    return None;
                }
                if opcode == b'd' {
                    stack.leaf(PyValue::Dict(Vec::with_capacity(items.len() / 2)));
                } else if stack.len() <= marks.last().copied().unwrap_or(0) {
                    return None;
                }
                let (dict, dict_height) = stack.top()?;
                let PyValue::Dict(entries) = dict else {
                    return None;
                };
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    entries.push((k, v));
                }
                *dict_height = (*dict_height).max(height);
            }
            // Anything else (memo references, globals, objects, sets, other encodings).
            _ => return None,
        }
    }
}

/// The most marks open at once on this path (a request opens one or two); a pickle that
/// opens more is left to the general path.
const MAX_MARKS: usize = 8;

/// The stack heights of the open marks, kept without an allocation.
struct Marks {
    at: [usize; MAX_MARKS],
    len: usize,
}

impl Marks {
    fn push(&mut self, at: usize) -> Option<()> {
        *self.at.get_mut(self.len)? = at;
        self.len += 1;
        Some(())
    }

    fn pop(&mut self) -> Option<usize> {
        self.len = self.len.checked_sub(1)?;
        Some(self.at[self.len])
    }

    fn last(&self) -> Option<&usize> {
        self.at[..self.len].last()
    }
}

/// The values built so far, each with its height (0 for a leaf or an empty container, else one
/// more than its highest item), which the depth limit is checked against.
struct Stack {
    values: Vec<(PyValue, usize)>,
}

impl Stack {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn push(&mut self, value: PyValue, height: usize) {
        self.values.push((value, height));
    }

    fn leaf(&mut self, value: PyValue) {
        self.push(value, 0);
    }

    fn pop(&mut self) -> Option<(PyValue, usize)> {
        self.values.pop()
    }

    fn top(&mut self) -> Option<(&mut PyValue, &mut usize)> {
        self.values
            .last_mut()
            .map(|(value, height)| (value, height))
    }

    /// The values from `at` on, and the height of a container holding them.
    fn split_off(&mut self, at: usize) -> (Vec<PyValue>, usize) {
        let mut height = 0;
        let mut items = Vec::with_capacity(self.values.len().saturating_sub(at));
        for (value, h) in self.values.drain(at..) {
            height = height.max(h + 1);
            items.push(value);
        }
        (items, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::pickle::{decode_with, DecodeOptions};

    /// The fast path's answer for `data` agrees with the general unpickler's (compared as debug
    /// text, so that a NaN equals itself); returns whether the fast path took it.
    fn agrees(data: &[u8], options: &DecodeOptions) -> bool {
        let Some(fast) = decode_tree(data, options.max_depth) else {
            return false;
        };
        let general = decode_with(data, options).expect("the general path decodes it too");
        assert_eq!(
            format!("{fast:?}"),
            format!("{general:?}"),
            "{}",
            hex::encode(data)
        );
        true
    }

    fn pickles() -> Vec<Vec<u8>> {
        let made = include_str!("testdata/tree_pickles.txt").lines();
        // The captured frames' last field is the payload.
        let captured = include_str!("testdata/captured_frames.txt")
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_whitespace().nth(4));
        made.filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .chain(captured)
            .map(|line| hex::decode(line.trim()).expect("fixture hex"))
            .collect()
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let options = DecodeOptions {
            opaque_globals: true,
            ..DecodeOptions::default()
        };
        let mut taken = 0;
        for data in pickles() {
            taken += usize::from(agrees(&data, &options));
            if data.len() > 400 {
                continue;
            }
            // Every prefix and many one-byte changes: the fast path gives up or agrees.
            for end in 0..data.len() {
                agrees(&data[..end], &options);
            }
            for at in 0..data.len() {
                for byte in [
                    0u8, 1, 0x28, 0x2e, 0x61, 0x65, 0x73, 0x74, 0x75, 0x85, 0x94, 0xff,
                ] {
                    let mut changed = data.clone();
                    changed[at] = byte;
                    agrees(&changed, &options);
                }
            }
        }
        // Requests, replies and plain data of every protocol take it.
        assert!(taken >= 40, "the fast path took only {taken} pickles");
    }

    #[test]
    fn nesting_past_the_limit_is_left_to_the_general_path() {
        // [[[[[]]]]] at protocol 4: height 4.
        let data = hex::decode("8004950f000000000000005d945d945d945d945d94616161612e").unwrap();
        assert!(decode_tree(&data, 4).is_some());
        assert!(decode_tree(&data, 3).is_none());
        let options = DecodeOptions {
            max_depth: 3,
            ..DecodeOptions::default()
        };
        assert!(decode_with(&data, &options).is_err());
    }
}
