//! A compact encoding of window sums, for the parts a source core sends to the slots
//! ([`crate::exchange`]).
//!
//! A row holds one measure's sum in each of the [`WINDOWS`] windows. Most of a row is zero (a
//! fact lies in few windows), and the windows that count it mostly nest (today within this
//! week within this month…), so its non-zero sums are mostly equal. A row is written as the
//! mask of its non-zero windows, then each non-zero sum as its difference from the one before
//! (zigzag varints): a row of zeros takes one byte, and a sum repeated in the next window one
//! more. A deals part takes 0.42 of the bytes of postcard's plain varints, and about a third
//! as many varints to decode.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

use crate::calendar::WINDOWS;

/// One row: a sum per window.
pub(crate) type Row = [i128; WINDOWS];

/// Why bytes are not rows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("the rows end early")]
    Truncated,
    #[error("a varint is longer than its type")]
    Overlong,
    #[error("a row's window mask {0:#x} names windows past the last")]
    Mask(u64),
    #[error("{0} bytes follow the last row")]
    Trailing(usize),
    #[error("a sum of {0} does not fit its measure")]
    Range(i128),
}

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u128, WireError> {
    let mut v: u128 = 0;
    for shift in (0..128).step_by(7) {
        let (&b, rest) = input.split_first().ok_or(WireError::Truncated)?;
        *input = rest;
        let bits = u128::from(b & 0x7f);
        // Bits that would be shifted out past the 128th: not a u128.
        if shift > 0 && bits.leading_zeros() < shift {
            return Err(WireError::Overlong);
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError::Overlong)
}

fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

/// Appends a count of rows, then each row.
pub(crate) fn put_rows<'a>(out: &mut Vec<u8>, rows: impl ExactSizeIterator<Item = &'a Row>) {
    put_varint(out, rows.len() as u128);
    for row in rows {
        let mask = row
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .fold(0u64, |m, (w, _)| m | 1 << w);
        put_varint(out, u128::from(mask));
        let mut before = 0i128;
        for v in row.iter().filter(|v| **v != 0) {
            // Wrapping both ways: any two sums round-trip, however far apart.
            put_varint(out, zigzag(v.wrapping_sub(before)));
            before = *v;
        }
    }
}

/// Reads what [`put_rows`] wrote.
pub(crate) fn get_rows(input: &mut &[u8]) -> Result<Vec<Row>, WireError> {
    let n = get_varint(input)?;
    // Each row takes a byte at least: a count past what is left is a lie, not an allocation.
    if n > input.len() as u128 {
        return Err(WireError::Truncated);
    }
    let mut rows = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mask = u64::try_from(get_varint(input)?).map_err(|_| WireError::Overlong)?;
        if mask >> WINDOWS != 0 {
            return Err(WireError::Mask(mask));
        }
        let mut row = [0i128; WINDOWS];
        let mut before = 0i128;
        for (w, v) in row.iter_mut().enumerate() {
            if mask & 1 << w != 0 {
                *v = before.wrapping_add(unzigzag(get_varint(input)?));
                before = *v;
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Rows in a serde format as one byte string of [`put_rows`].
pub(crate) fn serialize_rows<'a, S: Serializer>(
    rows: impl ExactSizeIterator<Item = &'a Row>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut out = Vec::new();
    put_rows(&mut out, rows);
    s.serialize_bytes(&out)
}

/// Rows from a byte string of [`serialize_rows`], all of it.
pub(crate) fn deserialize_rows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Row>, D::Error> {
    struct Rows;
    impl Visitor<'_> for Rows {
        type Value = Vec<Row>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("window rows as bytes")
        }
        fn visit_bytes<E: de::Error>(self, mut v: &[u8]) -> Result<Vec<Row>, E> {
            let rows = get_rows(&mut v).map_err(E::custom)?;
            match v.len() {
                0 => Ok(rows),
                n => Err(E::custom(WireError::Trailing(n))),
            }
        }
    }
    d.deserialize_bytes(Rows)
}

/// `Vec<Row>` fields: `#[serde(with = "crate::wire::rows")]`.
pub(crate) mod rows {
    use super::Row;

    pub fn serialize<S: serde::Serializer>(rows: &[Row], s: S) -> Result<S::Ok, S::Error> {
        super::serialize_rows(rows.iter(), s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Row>, D::Error> {
        super::deserialize_rows(d)
    }
}

/// Bytes as serde's byte string in postcard, as a row field is written: how the tests hand a
/// summary rows it would not have written itself.
#[cfg(test)]
pub(crate) fn postcard_bytes(b: &[u8]) -> Vec<u8> {
    postcard::to_stdvec(&serde_bytes(b)).expect("bytes encode")
}

#[cfg(test)]
fn serde_bytes(b: &[u8]) -> impl serde::Serialize + '_ {
    struct B<'a>(&'a [u8]);
    impl serde::Serialize for B<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    B(b)
}

/// A sum read back into a narrower measure.
pub(crate) fn narrow<T: TryFrom<i128>>(v: i128) -> Result<T, WireError> {
    T::try_from(v).map_err(|_| WireError::Range(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(rows: &[Row]) -> Vec<u8> {
        let mut out = Vec::new();
        put_rows(&mut out, rows.iter());
        out
    }

    /// Sums as they come (small, repeated, zero) and at the ends of the type.
    fn sum() -> impl Strategy<Value = i128> {
        prop_oneof![
            3 => Just(0i128),
            3 => -5_000i128..5_000,
            1 => any::<i64>().prop_map(i128::from),
            1 => prop_oneof![Just(i128::MIN), Just(i128::MAX), Just(i128::MIN + 1)],
        ]
    }

    fn row() -> impl Strategy<Value = Row> {
        prop::collection::vec(sum(), WINDOWS).prop_map(|v| v.try_into().expect("as built"))
    }

    proptest! {
        #[test]
        fn rows_round_trip(rows in prop::collection::vec(row(), 0..40)) {
            let bytes = encoded(&rows);
            let mut input = &bytes[..];
            prop_assert_eq!(get_rows(&mut input), Ok(rows));
            prop_assert!(input.is_empty());
        }

        #[test]
        fn a_cut_short_encoding_is_an_error(rows in prop::collection::vec(row(), 1..10), cut in any::<prop::sample::Index>()) {
            let bytes = encoded(&rows);
            let at = cut.index(bytes.len());
            let mut input = &bytes[..at];
            prop_assert!(get_rows(&mut input).is_err());
        }

        #[test]
        fn no_bytes_decode_into_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = get_rows(&mut &bytes[..]);
        }
    }

    #[test]
    fn nested_windows_cost_a_byte_each() {
        let mut row = [0i128; WINDOWS];
        for w in [3, 7, 8, 11] {
            row[w] = 6_862;
        }
        // Count, mask (two bytes), the sum (two bytes), three repeats.
        assert_eq!(encoded(&[row]).len(), 1 + 2 + 2 + 3);
        assert_eq!(encoded(&[[0; WINDOWS]]), vec![1, 0]);
    }

    #[test]
    fn malformed_rows_say_why() {
        assert_eq!(get_rows(&mut &[][..]), Err(WireError::Truncated));
        // One row whose mask names window 17.
        let mut bytes = vec![1];
        put_varint(&mut bytes, 1 << WINDOWS);
        assert_eq!(
            get_rows(&mut &bytes[..]),
            Err(WireError::Mask(1 << WINDOWS))
        );
        // A count of rows longer than the bytes.
        assert_eq!(get_rows(&mut &[5, 0][..]), Err(WireError::Truncated));
        // Nineteen continuation bytes: past 128 bits.
        let long = [0xffu8; 20];
        assert_eq!(get_rows(&mut &long[..]), Err(WireError::Overlong));
        assert_eq!(
            narrow::<i64>(i128::MAX),
            Err::<i64, _>(WireError::Range(i128::MAX))
        );
    }

    #[test]
    fn rows_in_postcard_are_one_byte_string() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct S {
            #[serde(with = "rows")]
            r: Vec<Row>,
            after: u8,
        }
        let mut row = [0i128; WINDOWS];
        row[0] = -1;
        let s = S {
            r: vec![row, [0; WINDOWS]],
            after: 7,
        };
        let bytes = postcard::to_stdvec(&s).expect("encodes");
        assert_eq!(postcard::from_bytes::<S>(&bytes).expect("as built"), s);
        // Trailing bytes inside the string are refused.
        let mut inner = encoded(&s.r);
        inner.push(0);
        let mut bad = postcard_bytes(&inner);
        bad.push(7);
        assert!(postcard::from_bytes::<S>(&bad).is_err());
    }
}
