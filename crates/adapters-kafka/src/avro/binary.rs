//! Avro's binary encoding of primitives, both ways: appending to a buffer, and a strict
//! cursor that refuses anything short, overlong or out of range.
//!
//! The hand-written codecs in [`super::trade`] and [`super::aggregate`] are built from these;
//! apache-avro is not involved, which is what makes them fast.

use crate::error::{Error, Result};

#[allow(clippy::cast_possible_truncation)] // taking the low 7 bits is the point
pub(super) fn put_long(buf: &mut Vec<u8>, value: i64) {
    // Zig-zag, then base-128 varint, least significant group first.
    let mut n = ((value << 1) ^ (value >> 63)).cast_unsigned();
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

pub(super) fn put_double(buf: &mut Vec<u8>, value: f64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

pub(super) fn put_str(buf: &mut Vec<u8>, value: &str) {
    // A string longer than i64::MAX bytes cannot exist in memory.
    put_long(buf, i64::try_from(value.len()).unwrap_or(i64::MAX));
    buf.extend_from_slice(value.as_bytes());
}

/// A `["null", T]` union: branch 0 for none, 1 then the value for some.
pub(super) fn put_optional<T>(
    buf: &mut Vec<u8>,
    value: Option<T>,
    put: impl FnOnce(&mut Vec<u8>, T),
) {
    match value {
        None => put_long(buf, 0),
        Some(v) => {
            put_long(buf, 1);
            put(buf, v);
        }
    }
}

pub(super) fn seq_to_long(what: &'static str, seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::Encode {
        what,
        reason: format!("trade_seq {seq} exceeds an Avro long"),
    })
}

/// A strict reader of Avro binary primitives.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) schema_id: u32,
}

impl Cursor<'_> {
    pub(super) fn fail(&self, reason: String) -> Error {
        Error::Decode {
            schema_id: self.schema_id,
            reason,
        }
    }

    pub(super) fn long(&mut self) -> Result<i64> {
        let mut value: u64 = 0;
        for (i, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                // Undo the zig-zag.
                return Ok((value >> 1).cast_signed() ^ -((value & 1).cast_signed()));
            }
        }
        Err(self.fail("truncated or overlong varint".into()))
    }

    pub(super) fn double(&mut self) -> Result<f64> {
        match self.bytes.split_first_chunk::<8>() {
            Some((raw, rest)) => {
                self.bytes = rest;
                Ok(f64::from_le_bytes(*raw))
            }
            None => Err(self.fail("truncated double".into())),
        }
    }

    pub(super) fn string(&mut self) -> Result<String> {
        let len = self.long()?;
        let len =
            usize::try_from(len).map_err(|_| self.fail(format!("negative string length {len}")))?;
        if len > self.bytes.len() {
            return Err(self.fail(format!("string of {len} bytes, {} left", self.bytes.len())));
        }
        let (text, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(text.to_vec()).map_err(|e| self.fail(format!("string is not UTF-8: {e}")))
    }

    pub(super) fn optional<T>(&mut self, read: fn(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.long()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(self.fail(format!("union branch {other} out of range"))),
        }
    }
}
