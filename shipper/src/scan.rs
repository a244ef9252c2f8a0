//! A one-pass check that a line is a JSON object, picking out the few
//! top-level fields the fast path needs, without building anything.
//!
//! It is deliberately conservative: it accepts only what is valid JSON (RFC
//! 8259) and answers `None` for anything it is not sure `serde_json` reads the
//! same way (escaped keys or extracted values, `\u` surrogates, exponents, very
//! long numbers, deep nesting, `null` or non-string values or repeats of the
//! fields it extracts). `None` only means "take the full parse": it never
//! decides that a line is bad.

/// What the fast path needs to know of a line's top level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    pub service_name: Option<&'a str>,
    pub instance_id: Option<&'a str>,
    pub dataset: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub host_name: bool,
    pub ingested: bool,
    pub file_path: bool,
    pub offset: bool,
    pub tags: bool,
    pub target_service: bool,
    /// A key the shipper owns or must look into (`agent`, `agent.*`,
    /// `event.id`, and the object forms `event`, `service`): the full parse decides.
    pub owned: bool,
}

/// Top-level keys that send a line to the full parse: fields the shipper owns
/// (`agent.*`, `event.id`) and object forms that could hide them or a
/// `service.name` claim.
pub(crate) fn owned_key(key: &[u8]) -> bool {
    matches!(key, b"agent" | b"event.id" | b"event" | b"service") || key.starts_with(b"agent.")
}

/// Deeper nesting is left to `serde_json` (its own limit is 128).
const MAX_DEPTH: usize = 64;
/// Longer number tokens are left to `serde_json` (range checks).
const MAX_NUMBER: usize = 64;

/// `Some` when `text` certainly is one JSON object (with JSON whitespace around it).
pub(crate) fn object(text: &str) -> Option<Fields<'_>> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    let mut f = Fields::default();
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let (key, escaped) = s.string()?;
            if escaped {
                return None;
            }
            let key = &s.b[key];
            s.ws();
            s.eat(b':')?;
            s.ws();
            let text_slot = match key {
                b"service.name" => Some(&mut f.service_name),
                b"service.instance.id" => Some(&mut f.instance_id),
                b"event.dataset" => Some(&mut f.dataset),
                b"trace.id" => Some(&mut f.trace_id),
                b"span.id" => Some(&mut f.span_id),
                _ => None,
            };
            if let Some(slot) = text_slot {
                if slot.is_some() || s.peek()? != b'"' {
                    return None;
                }
                let (value, escaped) = s.string()?;
                if escaped {
                    return None;
                }
                // Cut at ASCII quotes of a `str`: on char boundaries.
                *slot = Some(s.text.get(value)?);
            } else {
                let flag = match key {
                    b"host.name" => Some(&mut f.host_name),
                    b"event.ingested" => Some(&mut f.ingested),
                    b"log.file.path" => Some(&mut f.file_path),
                    b"log.offset" => Some(&mut f.offset),
                    b"tags" => Some(&mut f.tags),
                    b"heartbeat.target_service" => Some(&mut f.target_service),
                    _ => None,
                };
                f.owned |= owned_key(key);
                if let Some(flag) = flag {
                    if *flag || s.peek()? == b'n' {
                        return None;
                    }
                    *flag = true;
                }
                s.value(1)?;
            }
            s.ws();
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(f)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

/// Bytes that end the plain run of a string: `"`, `\\` and control characters.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Index of the first [`STOP`] byte in `b` at or after `i`, 8 bytes at a
/// time: in each word the lowest byte flagged by the zero-byte tests is
/// exact (their false positives only ever sit above a true one). (memchr2
/// for the quote and backslash plus a pass for control bytes cost more on
/// these short strings.)
fn find_stop(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w);
        let special = has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if special != 0 {
            return Some(i + (special.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while !STOP[usize::from(*b.get(i)?)] {
        i += 1;
    }
    Some(i)
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string at the cursor: where its raw content is and whether it holds escapes.
    fn string(&mut self) -> Option<(std::ops::Range<usize>, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = find_stop(self.b, self.i)?;
            match self.b[self.i] {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Some((start..end, escaped));
                }
                b'\\' => {}
                // Control characters must be escaped in JSON strings.
                _ => return None,
            }
            escaped = true;
            self.i += 1;
            match self.next()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    let hex = self.b.get(self.i..self.i + 4)?;
                    let mut v: u32 = 0;
                    for &h in hex {
                        v = v * 16 + char::from(h).to_digit(16)?;
                    }
                    if (0xD800..=0xDFFF).contains(&v) {
                        return None;
                    }
                    self.i += 4;
                }
                _ => return None,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`; an exponent is left to `serde_json`.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || self.i - start > MAX_NUMBER {
            return None;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Whatever the scanner accepts, serde_json reads as an object with the same fields.
    fn agrees(text: &str) -> Option<Fields<'_>> {
        let got = object(text);
        if let Some(f) = &got {
            let v: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("scanner accepted invalid JSON {text:?}: {e}"));
            let map = v
                .as_object()
                .unwrap_or_else(|| panic!("not an object: {text:?}"));
            let s = |k: &str| map.get(k).and_then(Value::as_str);
            assert_eq!(f.service_name, s("service.name"), "{text}");
            assert_eq!(f.instance_id, s("service.instance.id"), "{text}");
            assert_eq!(f.dataset, s("event.dataset"), "{text}");
            assert_eq!(f.trace_id, s("trace.id"), "{text}");
            assert_eq!(f.span_id, s("span.id"), "{text}");
            assert_eq!(f.host_name, map.contains_key("host.name"), "{text}");
            assert_eq!(f.ingested, map.contains_key("event.ingested"), "{text}");
            assert_eq!(f.file_path, map.contains_key("log.file.path"), "{text}");
            assert_eq!(f.offset, map.contains_key("log.offset"), "{text}");
            assert_eq!(f.tags, map.contains_key("tags"), "{text}");
            assert_eq!(
                f.target_service,
                map.contains_key("heartbeat.target_service"),
                "{text}"
            );
            assert_eq!(
                f.owned,
                map.keys().any(|k| owned_key(k.as_bytes())),
                "{text}"
            );
        }
        got
    }

    #[test]
    fn realistic_line() {
        let line = r#"{"@timestamp":"2026-11-25T07:00:00.000Z","log.level":"info","message":"PlaceOrder accepted (3 items, 10.50 EUR)","service.name":"order","service.instance.id":"order-1","event.dataset":"order.log","trace.id":"0af7651916cd43dd8448eb211c80319c","span.id":"b7ad6b7169203331","rpc.grpc.status_code":0,"event.duration":-12.5}"#;
        let f = agrees(line).expect("accepted");
        assert_eq!(f.service_name, Some("order"));
        assert_eq!(f.instance_id, Some("order-1"));
        assert_eq!(f.dataset, Some("order.log"));
        assert_eq!(f.trace_id, Some("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(f.span_id, Some("b7ad6b7169203331"));
        assert!(!f.host_name && !f.ingested && !f.file_path && !f.offset);
    }

    #[test]
    fn escaped_strings_nested_values_and_whitespace() {
        for ok in [
            r#"{}"#,
            " \t{ }\r\n ",
            r#"{"message":"a \"quoted\" \\ \/ \b\f\n\r\t \u00e9 \u20AC caf\u00e9 ✓"}"#,
            r#"{"a":{"b":[1,2,{"c":[]},[[]],{}],"d":{"e":null}},"f":[true,false,null]}"#,
            r#"{ "service.name" : "x" , "n" : [ 1 , -0.5 , 0 ] , "o" : { } }"#,
            r#"{"message":"{\"service.name\":\"not-top-level\"}","x":{"service.name":"nested"}}"#,
            r#"{"host.name":"h","event.ingested":"t","log.file.path":"/p","log.offset":7}"#,
            r#"{"host.name":{"x":1},"log.offset":[1]}"#,
            r#"{"k":"v","k":"w"}"#,
            r#"{"ü":"ö","emoji":"😀"}"#,
        ] {
            assert!(agrees(ok).is_some(), "should accept {ok:?}");
        }
        let f = agrees(r#"{"message":"{\"service.name\":\"n\"}","x":{"service.name":"m"}}"#);
        assert_eq!(
            f.and_then(|f| f.service_name),
            None,
            "only the top level counts"
        );
    }

    #[test]
    fn enrichment_fields_already_present_are_reported() {
        let f = agrees(r#"{"host.name":"h","event.ingested":"x","log.file.path":"/a","log.offset":3,"service.name":"s"}"#)
            .expect("accepted");
        assert!(f.host_name && f.ingested && f.file_path && f.offset);
        assert_eq!(f.service_name, Some("s"));
    }

    #[test]
    fn invalid_json_is_never_accepted() {
        for bad in [
            "",
            "   ",
            "{",
            "}",
            "{}}",
            "{} x",
            "{}\u{0c}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{a:1}"#,
            r#"{'a':1}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":True}"#,
            r#"{"a":nul}"#,
            r#"{"a":"unterminated}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"nl\nhere\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":NaN}"#,
            r#"{"a":Infinity}"#,
            "\u{feff}{}",
            "{}\u{a0}",
        ] {
            assert_eq!(object(bad), None, "must not accept {bad:?}");
        }
    }

    #[test]
    fn long_strings_with_specials_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for (special, valid) in [
                    ("\\\"", true),
                    ("\\n", true),
                    ("\n", false),
                    ("\u{1}", false),
                    ("\"", false),
                ] {
                    let mut v: String = "aé€😀xyz".chars().cycle().take(len).collect();
                    let cut = v.char_indices().nth(at).map_or(v.len(), |(i, _)| i);
                    v.insert_str(cut, special);
                    let line = format!(r#"{{"message":"{v}","service.name":"s"}}"#);
                    let got = agrees(&line);
                    assert_eq!(got.is_some(), valid, "{line:?}");
                }
            }
        }
    }

    #[test]
    fn not_objects() {
        for v in ["42", "\"s\"", "[1,2]", "null", "true", "[{}]"] {
            assert_eq!(object(v), None, "{v}");
        }
    }

    #[test]
    fn doubtful_cases_are_left_to_the_full_parse() {
        for doubt in [
            r#"{"service.name":7}"#,
            r#"{"service.name":null}"#,
            r#"{"host.name":null}"#,
            r#"{"service.name":"a","service.name":"b"}"#,
            r#"{"log.offset":1,"log.offset":2}"#,
            r#"{"service\u002ename":"x"}"#,
            r#"{"service.name":"caf\u00e9"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":1e5}"#,
            r#"{"a":1E400}"#,
            &format!(r#"{{"a":{}}}"#, "9".repeat(400)),
            &format!(r#"{{"a":{}1{}}}"#, "[".repeat(100), "]".repeat(100)),
        ] {
            assert_eq!(object(doubt), None, "{doubt}");
        }
    }

    #[test]
    fn agrees_with_serde_on_generated_lines() {
        // Every prefix and every single-byte deletion of a line exercising all
        // the syntax: whatever the scanner accepts must be a JSON object.
        let line = r#" {"a":[1,-2.5,0,{"b":"c\"d\\e\u0041"},true,false,null],"service.name":"s","host.name":{},"x":"y"} "#;
        assert!(agrees(line).is_some());
        for end in 0..line.len() {
            if line.is_char_boundary(end) {
                agrees(&line[..end]);
            }
        }
        for cut in 0..line.len() {
            let mut s = line.to_owned();
            if s.is_char_boundary(cut) && s.is_char_boundary(cut + 1) {
                s.remove(cut);
                agrees(&s);
            }
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use serde_json::Map;

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("service.name".to_owned()),
                Just("service.instance.id".to_owned()),
                Just("event.dataset".to_owned()),
                Just("trace.id".to_owned()),
                Just("span.id".to_owned()),
                Just("host.name".to_owned()),
                Just("log.offset".to_owned()),
                Just("tags".to_owned()),
                Just("agent.id".to_owned()),
                Just("event".to_owned()),
                Just("heartbeat.target_service".to_owned()),
                "[a-z.\\\\\"é]{0,6}",
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                "[a-z0-9 \"\\\\é😀\\n\\t\\u{1}]{0,10}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 40, 5, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::vec((key(), inner), 0..5)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        fn object() -> impl Strategy<Value = String> {
            (
                proptest::collection::vec((key(), value()), 0..8),
                any::<bool>(),
            )
                .prop_map(|(kv, pretty)| {
                    let v = Value::Object(kv.into_iter().collect::<Map<_, _>>());
                    if pretty {
                        serde_json::to_string_pretty(&v).unwrap()
                    } else {
                        v.to_string()
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the scanner accepts of real JSON objects, serde_json
            /// reads with the same fields.
            #[test]
            fn scanner_agrees_with_serde_on_objects(text in object()) {
                agrees(&text);
            }

            /// Mutated JSON (a byte deleted, inserted or replaced): the scanner
            /// never accepts what serde_json refuses.
            #[test]
            fn scanner_never_accepts_broken_json(
                text in object(),
                at in any::<prop::sample::Index>(),
                byte in prop_oneof![Just(b'"'), Just(b','), Just(b'{'), Just(b'}'), Just(b':'), Just(b'\\'), any::<u8>()],
                op in 0u8..3,
            ) {
                let mut b = text.into_bytes();
                let i = at.index(b.len() + 1);
                match op {
                    0 if i < b.len() => { b.remove(i); }
                    1 => b.insert(i, byte),
                    _ if i < b.len() => b[i] = byte,
                    _ => {}
                }
                if let Ok(s) = std::str::from_utf8(&b) {
                    agrees(s);
                }
            }

            /// Arbitrary text never panics and is accepted only if it is an object.
            #[test]
            fn arbitrary_text(text in "\\PC{0,40}") {
                agrees(&text);
            }

            /// The word-at-a-time search finds the same byte as a plain one,
            /// wherever the stop bytes sit in and across the 8-byte words.
            #[test]
            fn find_stop_is_the_first_stop_byte(
                bytes in proptest::collection::vec(
                    prop_oneof![4 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => 0x80u8..=0xff],
                    0..40,
                ),
                from in 0usize..41,
            ) {
                let plain = (from..bytes.len()).find(|&i| STOP[usize::from(bytes[i])]);
                prop_assert_eq!(find_stop(&bytes, from), plain);
            }
        }
    }
}
