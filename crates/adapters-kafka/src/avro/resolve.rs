//! Decoding through apache-avro with schema resolution, and taking the resolved record apart.
//!
//! Records written with any compatible writer schema (an evolved producer) are read into the
//! shape of our reader schema by [`decode_value`]; [`Fields`] then takes its fields out by name
//! with the conversions a compatible schema may need (an `int` where we have a `long`, …).

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;

use crate::error::{Error, Result};

/// Decodes a datum written with `writer` into a value of `reader`'s shape.
///
/// The datum is first checked against [`crate::datum_bounds`], so a foreign record cannot make
/// apache-avro reserve more than the record's own size suggests.
///
/// # Errors
/// [`Error::Decode`] if the bytes break those bounds, do not decode or do not resolve.
pub fn decode_value(
    schema_id: u32,
    writer: &Schema,
    reader: &Schema,
    mut datum: &[u8],
) -> Result<Value> {
    let decode = |reason: String| Error::Decode { schema_id, reason };
    crate::datum_bounds::check(writer, datum).map_err(decode)?;
    let value = GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .map_err(|e| decode(e.to_string()))?
        .read_value(&mut datum)
        .map_err(|e| decode(e.to_string()))?;
    // `check` read the same bytes with the same schema; this holds should the two ever differ.
    if !datum.is_empty() {
        return Err(decode(format!(
            "{} bytes left after the record",
            datum.len()
        )));
    }
    Ok(value)
}

/// The fields of a decoded record, taken out by name.
pub(super) struct Fields {
    values: Vec<(String, Value)>,
    schema_id: u32,
}

impl Fields {
    pub(super) fn of(value: Value, schema_id: u32) -> Result<Self> {
        match value {
            Value::Record(values) => Ok(Fields { values, schema_id }),
            other => Err(Error::Decode {
                schema_id,
                reason: format!("expected a record, got {other:?}"),
            }),
        }
    }

    pub(super) fn fail(&self, reason: String) -> Error {
        Error::Decode {
            schema_id: self.schema_id,
            reason,
        }
    }

    pub(super) fn take(&mut self, name: &str) -> Result<Value> {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some((_, value)) => Ok(std::mem::replace(value, Value::Null)),
            None => Err(self.fail(format!("field `{name}` missing"))),
        }
    }

    fn typed<T>(&mut self, name: &str, convert: fn(Value) -> Option<T>) -> Result<T> {
        let value = self.take(name)?;
        convert(value).ok_or_else(|| self.fail(format!("field `{name}` has the wrong type")))
    }

    pub(super) fn string(&mut self, name: &str) -> Result<String> {
        self.typed(name, Fields::as_string)
    }

    pub(super) fn long(&mut self, name: &str) -> Result<i64> {
        self.typed(name, Fields::as_long)
    }

    pub(super) fn seq(&mut self, name: &str) -> Result<u64> {
        let value = self.long(name)?;
        u64::try_from(value).map_err(|_| self.fail(format!("field `{name}` is negative: {value}")))
    }

    pub(super) fn double(&mut self, name: &str) -> Result<f64> {
        self.typed(name, Fields::as_double)
    }

    pub(super) fn symbol(&mut self, name: &str) -> Result<String> {
        self.typed(name, Fields::as_symbol)
    }

    pub(super) fn optional<T>(
        &mut self,
        name: &str,
        convert: fn(Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.take(name)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                value => convert(value)
                    .map(Some)
                    .ok_or_else(|| self.fail(format!("field `{name}` has the wrong type"))),
            },
            Value::Null => Ok(None),
            value => convert(value)
                .map(Some)
                .ok_or_else(|| self.fail(format!("field `{name}` has the wrong type"))),
        }
    }

    pub(super) fn as_string(value: Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    // By value like the other converters: they share the `fn(Value) -> Option<T>` shape.
    #[allow(clippy::needless_pass_by_value)]
    pub(super) fn as_long(value: Value) -> Option<i64> {
        match value {
            Value::Long(v) | Value::TimestampMillis(v) => Some(v),
            Value::Int(v) => Some(i64::from(v)),
            _ => None,
        }
    }

    #[allow(clippy::needless_pass_by_value)]
    pub(super) fn as_double(value: Value) -> Option<f64> {
        match value {
            Value::Double(v) => Some(v),
            Value::Float(v) => Some(f64::from(v)),
            Value::Long(v) => i32::try_from(v).ok().map(f64::from),
            Value::Int(v) => Some(f64::from(v)),
            _ => None,
        }
    }

    pub(super) fn as_symbol(value: Value) -> Option<String> {
        match value {
            Value::Enum(_, symbol) => Some(symbol),
            _ => None,
        }
    }
}
