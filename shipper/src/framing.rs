//! Splits a byte stream into lines at `\n`, with a hard cap on how much of one
//! line is kept: the memory held for a partial line never exceeds the cap.

/// One line as framed: the bytes (without `\n` and one trailing `\r`), where it
/// starts and ends in the stream.
#[derive(Clone, Copy, Debug)]
pub struct FramedLine<'a> {
    pub bytes: &'a [u8],
    /// Bytes the line had before `\n`, including anything cut off.
    pub original_len: usize,
    pub truncated: bool,
    /// Stream offset of the line's first byte.
    pub start: u64,
    /// Stream offset just after the line's `\n` (where the next line starts).
    pub end: u64,
    pub no_newline: bool,
}

/// Stateful framer; feed it chunks in stream order.
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    /// Kept prefix of the line in progress (at most `max_line` bytes).
    partial: Vec<u8>,
    /// Full length of the line in progress so far.
    partial_len: usize,
    /// Stream offset where the line in progress starts.
    line_start: u64,
}

impl LineFramer {
    /// `max_line` ≥ 1 bytes are kept per line; `offset` is the stream position of the next byte fed.
    pub fn new(max_line: usize, offset: u64) -> Self {
        Self {
            max_line: max_line.max(1),
            partial: Vec::new(),
            partial_len: 0,
            line_start: offset,
        }
    }

    /// Offset of the first byte not yet part of an emitted line.
    pub fn committed_offset(&self) -> u64 {
        self.line_start
    }

    /// Bytes of a line in progress (no newline seen yet).
    pub fn pending(&self) -> usize {
        self.partial_len
    }

    /// Forgets any partial line and continues at `offset`.
    pub fn reset(&mut self, offset: u64) {
        self.partial.clear();
        self.partial_len = 0;
        self.line_start = offset;
    }

    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(FramedLine<'_>)) {
        let mut pos = 0;
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let seg = &rest[..i];
                    let end = self.line_start + (self.partial_len + i + 1) as u64;
                    if self.partial_len == 0 {
                        let kept = &seg[..seg.len().min(self.max_line)];
                        emit(FramedLine {
                            bytes: strip_cr(kept, seg.len() <= self.max_line),
                            original_len: seg.len(),
                            truncated: seg.len() > self.max_line,
                            start: self.line_start,
                            end,
                            no_newline: false,
                        });
                    } else {
                        self.keep(seg);
                        let original_len = self.partial_len;
                        let whole = original_len <= self.max_line;
                        emit(FramedLine {
                            bytes: strip_cr(&self.partial, whole),
                            original_len,
                            truncated: !whole,
                            start: self.line_start,
                            end,
                            no_newline: false,
                        });
                        self.partial.clear();
                        self.partial_len = 0;
                    }
                    self.line_start = end;
                    pos += i + 1;
                }
                None => {
                    self.keep(rest);
                    pos = chunk.len();
                }
            }
        }
    }

    /// The stream ended: emit a line in progress, flagged as having no newline.
    pub fn finish(&mut self, mut emit: impl FnMut(FramedLine<'_>)) {
        if self.partial_len == 0 {
            return;
        }
        let end = self.line_start + self.partial_len as u64;
        emit(FramedLine {
            bytes: &self.partial,
            original_len: self.partial_len,
            truncated: self.partial_len > self.max_line,
            start: self.line_start,
            end,
            no_newline: true,
        });
        self.reset(end);
    }

    fn keep(&mut self, seg: &[u8]) {
        let room = self.max_line.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&seg[..seg.len().min(room)]);
        self.partial_len += seg.len();
    }
}

/// Drops one trailing `\r` (CRLF input), only from a line that was not cut.
fn strip_cr(b: &[u8], whole: bool) -> &[u8] {
    match b {
        [head @ .., b'\r'] if whole => head,
        _ => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]], max: usize) -> Vec<(Vec<u8>, usize, bool, u64, u64, bool)> {
        let mut f = LineFramer::new(max, 100);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |l| {
                out.push((
                    l.bytes.to_vec(),
                    l.original_len,
                    l.truncated,
                    l.start,
                    l.end,
                    l.no_newline,
                ))
            });
        }
        f.finish(|l| {
            out.push((
                l.bytes.to_vec(),
                l.original_len,
                l.truncated,
                l.start,
                l.end,
                l.no_newline,
            ))
        });
        out
    }

    #[test]
    fn lines_across_chunks_with_offsets() {
        let out = frame(&[b"ab\ncd", b"e\r\n", b"\nfg"], 10);
        assert_eq!(
            out,
            vec![
                (b"ab".to_vec(), 2, false, 100, 103, false),
                (b"cde".to_vec(), 4, false, 103, 108, false),
                (b"".to_vec(), 0, false, 108, 109, false),
                (b"fg".to_vec(), 2, false, 109, 111, true),
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_memory_stays_at_the_cap() {
        let mut f = LineFramer::new(4, 0);
        let mut out = Vec::new();
        for _ in 0..1000 {
            f.feed(b"xxxxxxxxxx", |_| {});
            assert!(f.partial.capacity() < 64);
        }
        f.feed(b"yy\nok\n", |l| {
            out.push((l.bytes.to_vec(), l.original_len, l.truncated, l.end))
        });
        assert_eq!(out[0], (b"xxxx".to_vec(), 10_002, true, 10_003));
        assert_eq!(out[1], (b"ok".to_vec(), 2, false, 10_006));
        let one = frame(&[b"0123456789\n"], 4);
        assert_eq!(one[0].0, b"0123");
        assert!(one[0].2);
    }

    #[test]
    fn committed_offset_stops_before_a_partial_line() {
        let mut f = LineFramer::new(100, 0);
        f.feed(b"one\ntw", |_| {});
        assert_eq!(f.committed_offset(), 4);
        assert_eq!(f.pending(), 2);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// The lines of `input` as a reference: split at `\n`, cut at `max`,
        /// one trailing `\r` dropped from lines that were not cut.
        fn reference(input: &[u8], max: usize) -> Vec<(Vec<u8>, usize, bool, u64, u64, bool)> {
            let mut out = Vec::new();
            let mut start = 0usize;
            let parts: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
            for (i, part) in parts.iter().enumerate() {
                let last = i == parts.len() - 1;
                if last && part.is_empty() {
                    break;
                }
                let end = start + part.len() + usize::from(!last);
                let kept = &part[..part.len().min(max)];
                let whole = part.len() <= max;
                let bytes = match kept {
                    [head @ .., b'\r'] if whole && !last => head,
                    _ => kept,
                };
                out.push((
                    bytes.to_vec(),
                    part.len(),
                    !whole,
                    100 + start as u64,
                    100 + end as u64,
                    last,
                ));
                start = end;
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// However the stream is cut into chunks, the same lines come out,
            /// with the same offsets, and memory per line stays at the cap.
            #[test]
            fn random_splits_frame_like_the_whole(
                input in proptest::collection::vec(
                    prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..300),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
                max in 1usize..40,
            ) {
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
                at.sort_unstable();
                let mut chunks = Vec::new();
                let mut prev = 0;
                for a in at.into_iter().chain([input.len()]) {
                    chunks.push(&input[prev..a]);
                    prev = a;
                }
                let got = frame(&chunks, max);
                prop_assert_eq!(got, reference(&input, max));
            }
        }
    }
}
