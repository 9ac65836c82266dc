//! Bounds a record written with a foreign schema must respect before apache-avro decodes it.
//!
//! apache-avro trusts a datum's counts up to a process-wide 512 MiB: a 6-byte record whose
//! string claims 500 MiB reserves that much, and an array of `null` (items of zero bytes) lets
//! an 89-byte record claim hundreds of millions of items. It also recurses once per nesting
//! level, so a deep recursive record could exhaust the stack. This walk reads the datum against
//! the writer schema without allocating and refuses, before decoding:
//! - a string, bytes or block size longer than the bytes left,
//! - more collection items in the whole record than the record has bytes (a real item of any
//!   type costs at least one byte except `null`, empty records and zero-size fixed),
//! - more values of any kind than [`VALUES_PER_BYTE`] per byte plus [`VALUES_ALWAYS`]: values
//!   of zero bytes (`null`, empty records) reached through named types used again and again
//!   could otherwise make an empty datum stand for millions of values,
//! - nesting deeper than [`MAX_DEPTH`].
//!
//! Our own schema takes its own strict decoder and never comes here.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, Name, RecordSchema, ResolvedSchema, UuidSchema,
};

/// Deepest nesting of records, arrays, maps and unions a foreign record may use.
pub const MAX_DEPTH: usize = 64;
/// Values a record may hold per byte of its datum, beyond [`VALUES_ALWAYS`].
pub const VALUES_PER_BYTE: usize = 16;
/// Values any record may hold, whatever its size (a schema of many null fields).
pub const VALUES_ALWAYS: usize = 4_096;

/// Checks that `datum` stays within the bounds above when read with `writer`.
///
/// # Errors
/// A sentence saying which bound the datum breaks, or why the schema's names do not resolve.
pub fn check(writer: &Schema, datum: &[u8]) -> Result<(), String> {
    let resolved = ResolvedSchema::try_from(writer).map_err(|e| e.to_string())?;
    let mut walk = Walk {
        names: resolved.get_names(),
        bytes: datum,
        items_left: datum.len(),
        values_left: datum
            .len()
            .saturating_mul(VALUES_PER_BYTE)
            .saturating_add(VALUES_ALWAYS),
    };
    walk.value(writer, None, 0)?;
    if walk.bytes.is_empty() {
        Ok(())
    } else {
        Err(format!("{} bytes left after the record", walk.bytes.len()))
    }
}

/// A cursor over the datum with what it may still claim.
struct Walk<'a, 's> {
    names: &'a HashMap<Name, &'s Schema>,
    bytes: &'a [u8],
    items_left: usize,
    values_left: usize,
}

impl Walk<'_, '_> {
    fn value(
        &mut self,
        schema: &Schema,
        namespace: Option<&str>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.values_left = self.values_left.checked_sub(1).ok_or_else(|| {
            "more values than a record of this size can hold (zero-size values repeated)".to_owned()
        })?;
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
            | Schema::Enum(_) => self.varint().map(drop),
            Schema::Bytes
            | Schema::String
            | Schema::BigDecimal
            | Schema::Uuid(UuidSchema::Bytes | UuidSchema::String)
            | Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Bytes,
                ..
            }) => {
                let len = self.length("a string or bytes")?;
                self.skip(len)
            }
            Schema::Fixed(fixed)
            | Schema::Duration(fixed)
            | Schema::Uuid(UuidSchema::Fixed(fixed))
            | Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Fixed(fixed),
                ..
            }) => self.skip(fixed.size),
            Schema::Array(array) => {
                self.blocks(|walk| walk.value(&array.items, namespace, depth + 1))
            }
            Schema::Map(map) => self.blocks(|walk| {
                let key = walk.length("a map key")?;
                walk.skip(key)?;
                walk.value(&map.types, namespace, depth + 1)
            }),
            Schema::Union(union) => {
                let index = self.varint()?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|i| union.variants().get(i))
                    .ok_or_else(|| format!("union branch {index} does not exist"))?;
                self.value(branch, namespace, depth + 1)
            }
            Schema::Record(RecordSchema { name, fields, .. }) => {
                let name = name.fully_qualified_name(namespace);
                fields
                    .iter()
                    .try_for_each(|field| self.value(&field.schema, name.namespace(), depth + 1))
            }
            Schema::Ref { name } => {
                let name = name.fully_qualified_name(namespace);
                let named = self
                    .names
                    .get(name.as_ref())
                    .copied()
                    .ok_or_else(|| format!("schema name {name} is not defined"))?;
                self.value(named, name.namespace(), depth + 1)
            }
        }
    }

    /// Reads the blocks of an array or map, each item by `item`, within the item budget.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            let count = self.varint()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                let size = self.length("a block")?;
                if size > self.bytes.len() {
                    return Err(format!(
                        "a block claims {size} bytes, {} are left",
                        self.bytes.len()
                    ));
                }
            }
            let count = usize::try_from(count.unsigned_abs())
                .ok()
                .filter(|&n| n <= self.items_left)
                .ok_or_else(|| {
                    format!(
                        "a collection claims {} items, more than the record's {} bytes allow",
                        count.unsigned_abs(),
                        self.items_left
                    )
                })?;
            self.items_left -= count;
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    /// A length prefix, refused when longer than the bytes left.
    fn length(&mut self, what: &str) -> Result<usize, String> {
        let len = self.varint()?;
        usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| format!("{what} claims {len} bytes, {} are left", self.bytes.len()))
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if n > self.bytes.len() {
            return Err(format!(
                "the record ends {} bytes early",
                n - self.bytes.len()
            ));
        }
        self.bytes = &self.bytes[n..];
        Ok(())
    }

    /// A zig-zag varint of at most ten bytes.
    fn varint(&mut self) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for (i, &byte) in self.bytes.iter().take(10).enumerate() {
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                #[allow(clippy::cast_possible_wrap)] // zig-zag decoding reinterprets the bits
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("a number runs past the record or past ten bytes".to_owned())
    }
}
