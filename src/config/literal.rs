//! The literal fast path for regex rules (`regex = "iPhone"`): whether a
//! pattern matches only itself, and which of its bytes to look for first.
//! The analysis runs once per regex when the config is loaded
//! ([`super::types::ValueRegex`]); routing uses [`Literal::is_in`] on the
//! request path to answer "no" without entering the regex engine.

/// For a pattern that is a plain literal, the index of its likely rarest
/// byte (see [`Literal::of`]); `None` otherwise. Run once per regex, when
/// the config is loaded ([`ValueRegex`]).
pub fn literal_rare(pattern: &str) -> Option<usize> {
    Literal::of(pattern).map(|l| l.rare)
}

/// [`LITERAL_RANK`] of a byte that is not literal in a regex.
const NOT_LITERAL: u8 = u8::MAX;

/// Per byte: [`NOT_LITERAL`], or how common it is in header values (lower
/// is rarer): upper-case letters 0; digits and literal punctuation 1;
/// lower-case letters and space 2.
const LITERAL_RANK: [u8; 256] = {
    let mut rank = [NOT_LITERAL; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        rank[b] = match c {
            b'A'..=b'Z' => 0,
            b'0'..=b'9'
            | b'-'
            | b'_'
            | b'/'
            | b','
            | b':'
            | b';'
            | b'='
            | b'@'
            | b'!'
            | b'%'
            | b'\''
            | b'"'
            | b'<'
            | b'>' => 1,
            b'a'..=b'z' | b' ' => 2,
            _ => NOT_LITERAL,
        };
        b += 1;
    }
    rank
};

/// A regex pattern that matches only itself, and the index of the byte in
/// it to look for first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal<'p> {
    /// The pattern's bytes.
    pub bytes: &'p [u8],
    /// Index of the byte to look for first.
    pub rare: usize,
}

impl<'p> Literal<'p> {
    /// The pattern as a literal if every byte of it matches itself in a
    /// regex with default flags: ASCII letters, digits, space and punctuation
    /// that is not a regex meta character (nor `#`, `&`, `~`, which are
    /// literal outside classes but conservatively left out). One pass, which
    /// also picks the byte likely rarest in a header value: an upper-case
    /// letter over punctuation and digits over a lower-case letter or space.
    /// (memchr's `packedpair::Pair` ranks better but cost ~200 instructions
    /// per call through its iterator adaptors.)
    pub fn of(pattern: &'p str) -> Option<Literal<'p>> {
        let bytes = pattern.as_bytes();
        let (mut rare, mut best) = (0, NOT_LITERAL);
        for (i, &b) in bytes.iter().enumerate() {
            let rank = LITERAL_RANK[usize::from(b)];
            if rank < best {
                (rare, best) = (i, rank);
            } else if rank == NOT_LITERAL {
                return None;
            }
        }
        Some(Literal { bytes, rare })
    }

    /// Whether the literal occurs in `haystack`: `memchr` for the rare
    /// byte, each candidate compared in full.
    ///
    /// `memmem::find` builds a searcher per call, which for one search in a
    /// 110-byte header costs more than the regex it replaces (~600
    /// instructions). After a few false candidates the rest of the haystack
    /// goes to `memmem` anyway, so a hostile header cannot make this quadratic.
    pub fn is_in(self, haystack: &[u8]) -> bool {
        const CANDIDATES_BEFORE_MEMMEM: u32 = 8;
        let (needle, rare) = (self.bytes, self.rare);
        if needle.len() > haystack.len() {
            return false;
        }
        let Some(&byte) = needle.get(rare) else {
            return true; // the empty needle
        };
        // A match at `at` has its rare byte at `at + rare`, and
        // `at <= haystack.len() - needle.len()`.
        let last = haystack.len() - needle.len();
        let mut from = 0;
        for _ in 0..CANDIDATES_BEFORE_MEMMEM {
            let Some(window) = haystack.get(from + rare..=last + rare) else {
                return false;
            };
            let Some(i) = memchr::memchr(byte, window) else {
                return false;
            };
            let at = from + i;
            if haystack.get(at..at + needle.len()) == Some(needle) {
                return true;
            }
            from = at + 1;
        }
        // Every start before `from` was ruled out.
        haystack
            .get(from..)
            .is_some_and(|rest| memchr::memmem::find(rest, needle).is_some())
    }
}
