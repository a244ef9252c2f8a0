//! `event.id`: the stable identity of one shipped line, so that a line shipped
//! twice (at least once into Kafka) is indexed once. 32 lowercase hex digits:
//! the first 16 name the source (one generation of a tailed file, or the data
//! directory's spool), the last 16 the position in it (the line's byte offset,
//! or its spool sequence number).

/// The ECS field.
pub const FIELD: &str = "event.id";
/// Bytes of `,"event.id":"<32 hex>"`.
pub const SPLICED_LEN: usize = 1 + 1 + FIELD.len() + 2 + 1 + 32 + 1;

/// See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventId {
    pub source: u64,
    pub position: u64,
}

impl EventId {
    pub fn new(source: u64, position: u64) -> Self {
        Self { source, position }
    }

    /// The 32 hex digits.
    pub fn hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, word) in [self.source, self.position].into_iter().enumerate() {
            for (j, byte) in word.to_be_bytes().into_iter().enumerate() {
                out[i * 16 + j * 2] = DIGITS[usize::from(byte >> 4)];
                out[i * 16 + j * 2 + 1] = DIGITS[usize::from(byte & 0xf)];
            }
        }
        out
    }

    /// The id as text.
    pub fn to_hex_string(self) -> String {
        self.hex().iter().map(|&b| char::from(b)).collect()
    }

    /// Writes `"event.id":"…"` (no separator).
    pub fn write_field(self, out: &mut Vec<u8>) {
        out.push(b'"');
        out.extend_from_slice(FIELD.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(&self.hex());
        out.push(b'"');
    }

    /// Adds the field as the last member of `payload`, a JSON object that ends
    /// with its `}` (as every payload the encoder makes does).
    pub fn splice_into(self, payload: &mut Vec<u8>) {
        if payload.last() != Some(&b'}') {
            return; // not an object of ours: nothing sensible to add to
        }
        payload.pop();
        let empty = payload
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        if !empty {
            payload.push(b',');
        }
        self.write_field(payload);
        payload.push(b'}');
    }
}

/// FNV-1a over `parts` (64 bits): stable across releases and platforms, unlike
/// std's hasher. Used to name sources, never for security.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separates ("ab","c") from ("a","bc").
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_splice() {
        let id = EventId::new(0x0123_4567_89ab_cdef, 42);
        assert_eq!(id.to_hex_string(), "0123456789abcdef000000000000002a");
        let mut p = br#"{"a":1}"#.to_vec();
        id.splice_into(&mut p);
        assert_eq!(
            p,
            br#"{"a":1,"event.id":"0123456789abcdef000000000000002a"}"#.to_vec()
        );
        let mut e = b"{ }".to_vec();
        id.splice_into(&mut e);
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["event.id"], id.to_hex_string());
        let mut field = Vec::new();
        id.write_field(&mut field);
        assert_eq!(field.len() + 1, SPLICED_LEN);
    }

    #[test]
    fn fnv_separates_parts() {
        assert_ne!(fnv64(&[b"ab", b"c"]), fnv64(&[b"a", b"bc"]));
        assert_eq!(fnv64(&[b"x"]), fnv64(&[b"x"]));
    }
}
