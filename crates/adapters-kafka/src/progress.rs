//! Progress markers on the raw topic: a record with no key and no value, whose headers say up
//! to which time (ms) its writer's stream is complete in that partition, and who the writer is.
//!
//! Readers that want only trades skip records without a value (Confluent's Avro deserializer
//! returns null for them).

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Header with the completeness time: milliseconds since the epoch, ASCII decimal.
pub const COMPLETENESS_HEADER: &str = "progress.completeness-ms";
/// Header with the writer's id (UTF-8).
pub const WRITER_HEADER: &str = "progress.writer";
/// Longest writer id accepted, in bytes.
pub const MAX_WRITER_LEN: usize = 128;

/// Headers of a marker.
pub fn marker_headers(completeness_ms: i64, writer: &str) -> OwnedHeaders {
    let completeness = completeness_ms.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: COMPLETENESS_HEADER,
            value: Some(completeness.as_str()),
        })
        .insert(Header {
            key: WRITER_HEADER,
            value: Some(writer),
        })
}

/// What the headers of a valueless record say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerHeaders {
    /// Not a marker (no completeness header): some other valueless record.
    Absent,
    /// A well-formed marker.
    Marker {
        /// Writer id.
        writer: String,
        /// Completeness time, ms.
        completeness_ms: i64,
    },
    /// A marker header that cannot be read; why.
    Malformed(String),
}

/// Reads the marker headers of a record.
pub fn read_marker(headers: Option<&impl Headers>) -> MarkerHeaders {
    let find = |name: &str| {
        headers.and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .map(|h| h.value.unwrap_or(&[]))
        })
    };
    let Some(completeness) = find(COMPLETENESS_HEADER) else {
        return MarkerHeaders::Absent;
    };
    let completeness_ms = match std::str::from_utf8(completeness)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
    {
        Some(ms) if ms >= 0 => ms,
        _ => {
            return MarkerHeaders::Malformed(format!(
                "{COMPLETENESS_HEADER} is not a non-negative integer of ms: {:?}",
                String::from_utf8_lossy(&completeness[..completeness.len().min(40)])
            ));
        }
    };
    let writer = match find(WRITER_HEADER).map(std::str::from_utf8) {
        Some(Ok(w)) if !w.is_empty() && w.len() <= MAX_WRITER_LEN => w.to_owned(),
        _ => {
            return MarkerHeaders::Malformed(format!(
                "{WRITER_HEADER} is missing, empty, longer than {MAX_WRITER_LEN} bytes or not UTF-8"
            ));
        }
    };
    MarkerHeaders::Marker {
        writer,
        completeness_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(
            read_marker(Some(&marker_headers(1_700_000_000_123, "app-raw"))),
            MarkerHeaders::Marker {
                writer: "app-raw".into(),
                completeness_ms: 1_700_000_000_123
            }
        );
    }

    #[test]
    fn hostile_headers_are_malformed_not_markers() {
        let with = |c: &[u8], w: Option<&[u8]>| {
            let mut h = OwnedHeaders::new().insert(Header {
                key: COMPLETENESS_HEADER,
                value: Some(c),
            });
            if let Some(w) = w {
                h = h.insert(Header {
                    key: WRITER_HEADER,
                    value: Some(w),
                });
            }
            read_marker(Some(&h))
        };
        let long = [b'w'; MAX_WRITER_LEN + 1];
        for (c, w) in [
            (&b"12x"[..], Some(&b"w"[..])),
            (b"-5", Some(b"w")),
            (b"99999999999999999999", Some(b"w")),
            (b"\xff", Some(b"w")),
            (b"12", None),
            (b"12", Some(b"")),
            (b"12", Some(b"\xff")),
            (b"12", Some(&long[..])),
        ] {
            assert!(
                matches!(with(c, w), MarkerHeaders::Malformed(_)),
                "{c:?} {w:?}"
            );
        }
        assert_eq!(read_marker(None::<&OwnedHeaders>), MarkerHeaders::Absent);
        assert_eq!(
            read_marker(Some(&OwnedHeaders::new())),
            MarkerHeaders::Absent
        );
    }
}
