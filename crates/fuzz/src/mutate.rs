//! Mutations of an input: byte-level damage plus JSON-aware ones (type swaps, extreme numbers,
//! duplicated keys, deep nesting, repeated elements), which reach the parsers' deeper paths.

/// A small, fast, seedable generator (SplitMix64): runs are reproducible from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation)] // the remainder is below n, a usize
        let pick = (self.next_u64() % n as u64) as usize;
        pick
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers at the edges of what the parsers and the domain accept.
const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1e400",
    "-1e400",
    "1e-400",
    "1.7976931348623157e308",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "4102444800000",
    "4102444800001",
    "999999999999.99",
    "1000000000000",
    "0.000000000000000000001",
    "NaN",
    "Infinity",
    "00012",
    "1.",
    "-",
];

/// Values of every JSON type, for type swaps.
const JSON_VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[1,2]",
    "{\"a\":1}",
    "12",
    "-3.5",
    "\"buy\"",
    "\"sell\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
];

/// Bytes that mean something to JSON or Avro framing.
const INTERESTING_BYTES: &[u8] = &[
    0, 0x01, 0x02, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', b'-', b'.',
    b'0', b'9', b'e', b' ', b'\n',
];

/// Applies one to four random mutations to `input`, keeping it under `max_len` bytes.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8], max_len: usize) {
    for _ in 0..=rng.below(4) {
        match rng.below(12) {
            0 => flip_bit(rng, input),
            1 => set_byte(rng, input),
            2 => delete_span(rng, input),
            3 => duplicate_span(rng, input),
            4 => truncate(rng, input),
            5 => splice(rng, input, other),
            6 => replace_number(rng, input),
            7 => swap_type(rng, input),
            8 => duplicate_key(rng, input),
            9 => nest(rng, input),
            10 => repeat_element(rng, input),
            _ => insert_varint(rng, input),
        }
        input.truncate(max_len);
    }
}

fn flip_bit(rng: &mut Rng, input: &mut [u8]) {
    if !input.is_empty() {
        let at = rng.below(input.len());
        input[at] ^= 1 << rng.below(8);
    }
}

fn set_byte(rng: &mut Rng, input: &mut [u8]) {
    if !input.is_empty() {
        let at = rng.below(input.len());
        input[at] = *rng.pick(INTERESTING_BYTES);
    }
}

fn span(rng: &mut Rng, len: usize) -> (usize, usize) {
    let start = rng.below(len);
    let end = start + rng.below((len - start).min(64) + 1);
    (start, end)
}

fn delete_span(rng: &mut Rng, input: &mut Vec<u8>) {
    if !input.is_empty() {
        let (start, end) = span(rng, input.len());
        input.drain(start..end);
    }
}

fn duplicate_span(rng: &mut Rng, input: &mut Vec<u8>) {
    if !input.is_empty() {
        let (start, end) = span(rng, input.len());
        let copy = input[start..end].to_vec();
        let at = rng.below(input.len() + 1);
        input.splice(at..at, copy);
    }
}

fn truncate(rng: &mut Rng, input: &mut Vec<u8>) {
    let len = rng.below(input.len() + 1);
    input.truncate(len);
}

fn splice(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    if !other.is_empty() {
        let (start, end) = span(rng, other.len());
        let at = rng.below(input.len() + 1);
        let cut = (at + rng.below(input.len() - at + 1)).min(input.len());
        input.splice(at..cut, other[start..end].iter().copied());
    }
}

/// The byte ranges of JSON number tokens (a digit run with sign, point and exponent).
fn numbers(input: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i].is_ascii_digit()
            || (input[i] == b'-' && input.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < input.len()
                && matches!(input[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            {
                i += 1;
            }
            found.push((start, i));
        } else {
            i += 1;
        }
    }
    found
}

/// The byte ranges of JSON values that are simple (numbers, strings, literals).
fn scalars(input: &[u8]) -> Vec<(usize, usize)> {
    let mut found = numbers(input);
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'"' {
            let start = i;
            i += 1;
            while i < input.len() && input[i] != b'"' {
                i += if input[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(input.len());
            // A string followed by ':' is a key; swapping it would only break the object.
            if input.get(i) != Some(&b':') {
                found.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    found
}

fn replace_number(rng: &mut Rng, input: &mut Vec<u8>) {
    let found = numbers(input);
    if !found.is_empty() {
        let (start, end) = *rng.pick(&found);
        input.splice(start..end, rng.pick(EXTREME_NUMBERS).bytes());
    }
}

fn swap_type(rng: &mut Rng, input: &mut Vec<u8>) {
    let found = scalars(input);
    if !found.is_empty() {
        let (start, end) = *rng.pick(&found);
        input.splice(start..end, rng.pick(JSON_VALUES).bytes());
    }
}

/// Copies a `"key":value,` pair right after itself, so the object carries the key twice.
fn duplicate_key(rng: &mut Rng, input: &mut Vec<u8>) {
    let keys: Vec<usize> = input
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"\":")
        .map(|(i, _)| i)
        .collect();
    if keys.is_empty() {
        return;
    }
    let colon = *rng.pick(&keys) + 1;
    let Some(key_start) = input[..colon - 1].iter().rposition(|&b| b == b'"') else {
        return;
    };
    let Some(value_len) = input[colon..].iter().position(|&b| b == b',' || b == b'}') else {
        return;
    };
    let mut pair = input[key_start..colon + value_len].to_vec();
    pair.push(b',');
    input.splice(key_start..key_start, pair);
}

/// Wraps the input, or replaces a value with, up to 100 000 levels of arrays or objects.
fn nest(rng: &mut Rng, input: &mut Vec<u8>) {
    let depth = [2, 64, 129, 1_000, 100_000][rng.below(5)];
    let (open, close): (&[u8], &[u8]) = if rng.below(2) == 0 {
        (b"[", b"]")
    } else {
        (b"{\"a\":", b"}")
    };
    let mut nested = open.repeat(depth);
    nested.extend_from_slice(b"1");
    nested.extend(close.repeat(depth));
    let found = scalars(input);
    if found.is_empty() || rng.below(4) == 0 {
        *input = nested;
    } else {
        let (start, end) = *rng.pick(&found);
        input.splice(start..end, nested);
    }
}

/// Repeats one element of an array many times (`"data":[1,1,1,…]` and friends).
fn repeat_element(rng: &mut Rng, input: &mut Vec<u8>) {
    let opens: Vec<usize> = input
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'[')
        .map(|(i, _)| i + 1)
        .collect();
    if opens.is_empty() {
        return;
    }
    let at = *rng.pick(&opens);
    let element: &[u8] = match rng.below(3) {
        0 => b"1,",
        1 => b"{},",
        _ => b"null,",
    };
    let times = [16, 1_000, 100_000][rng.below(3)];
    input.splice(at..at, element.repeat(times));
}

/// Inserts an Avro varint with an extreme value (lengths, counts, union branches).
fn insert_varint(rng: &mut Rng, input: &mut Vec<u8>) {
    let value: i64 = *rng.pick(&[
        -1,
        0,
        1,
        2,
        63,
        64,
        1 << 20,
        500 << 20,
        i64::from(i32::MAX),
        i64::MAX,
        i64::MIN,
    ]);
    #[allow(clippy::cast_sign_loss)] // zig-zag encoding reinterprets the bits
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    let mut bytes = Vec::new();
    loop {
        #[allow(clippy::cast_possible_truncation)] // seven bits at a time
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    let at = rng.below(input.len() + 1);
    input.splice(at..at, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbers_and_scalars_but_not_keys() {
        let input = br#"{"a":-12.5e3,"b":"x","c":true}"#;
        let numbers: Vec<&[u8]> = numbers(input).iter().map(|&(s, e)| &input[s..e]).collect();
        assert_eq!(numbers, [b"-12.5e3".as_slice()]);
        let scalars: Vec<&[u8]> = scalars(input).iter().map(|&(s, e)| &input[s..e]).collect();
        assert_eq!(scalars, [b"-12.5e3".as_slice(), b"\"x\""]);
    }

    #[test]
    fn duplicates_a_key_value_pair() {
        let mut input = br#"{"a":1}"#.to_vec();
        duplicate_key(&mut Rng::new(1), &mut input);
        assert_eq!(input, br#"{"a":1,"a":1}"#);
    }

    #[test]
    fn mutations_stay_within_the_length_limit_and_are_reproducible() {
        let seed = br#"{"data":[{"price":1.5,"amount":2}]}"#;
        let run = |seed_value| {
            let mut rng = Rng::new(seed_value);
            (0..500)
                .map(|_| {
                    let mut input = seed.to_vec();
                    mutate(&mut rng, &mut input, seed, 4096);
                    assert!(input.len() <= 4096);
                    input
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
