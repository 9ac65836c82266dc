//! Confluent's wire format: magic byte `0`, the writer schema id as 4 big-endian bytes, then the
//! Avro binary datum.

use crate::error::{Error, Result};

/// First byte of every Confluent-framed record.
pub const MAGIC: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Starts a frame for `schema_id` in `buf` (cleared first); append the datum after it.
pub fn start_frame(buf: &mut Vec<u8>, schema_id: u32) {
    buf.clear();
    buf.push(MAGIC);
    buf.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a frame into its writer schema id and the Avro datum.
///
/// # Errors
/// [`Error::Framing`] for an empty or short record or a magic byte other than 0.
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8])> {
    match bytes {
        [] => Err(Error::Framing("empty record".into())),
        [magic, ..] if *magic != MAGIC => {
            Err(Error::Framing(format!("magic byte {magic}, expected 0")))
        }
        [_, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => Err(Error::Framing(format!(
            "{} bytes, shorter than the 5-byte header",
            bytes.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_splits() {
        let mut buf = vec![9, 9];
        start_frame(&mut buf, 0x0102_0304);
        buf.extend_from_slice(b"datum");
        assert_eq!(buf, [0, 1, 2, 3, 4, b'd', b'a', b't', b'u', b'm']);
        assert_eq!(split_frame(&buf).unwrap(), (0x0102_0304, &b"datum"[..]));
    }

    #[test]
    fn rejects_what_is_not_a_frame() {
        for (bytes, why) in [
            (&[][..], "empty record"),
            (&[1, 0, 0, 0, 1, 2][..], "magic byte 1"),
            (&[0, 0, 0][..], "shorter than the 5-byte header"),
        ] {
            let message = split_frame(bytes).unwrap_err().to_string();
            assert!(message.contains(why), "{message}");
        }
    }
}
