//! Incremental UTF-8 validation across fragments, failing at the first invalid byte.
//!
//! RFC 6455 8.1: an endpoint that receives invalid UTF-8 in a text message MUST fail the
//! connection; checking each chunk as it arrives lets that happen before the message ends.

/// The text received so far is not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8")]
pub struct Utf8Error;

/// Validates a byte stream chunk by chunk; a code point may be split across chunks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: usize,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Forgets any partial code point (start of a new message).
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }

    /// Checks the next chunk; fails as soon as a byte cannot start or continue valid UTF-8.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Utf8Error> {
        if self.carry_len > 0 {
            // Complete the code point left over from the last chunk one byte at a time.
            while let Some((&b, rest)) = data.split_first() {
                if self.carry_len >= self.carry.len() {
                    return Err(Utf8Error);
                }
                self.carry[self.carry_len] = b;
                self.carry_len += 1;
                data = rest;
                match simdutf8::compat::from_utf8(&self.carry[..self.carry_len]) {
                    Ok(_) => {
                        self.carry_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(Utf8Error),
                    Err(_) => {}
                }
            }
            if self.carry_len > 0 {
                return Ok(());
            }
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            // error_len() == None: the input ends inside a code point that may still be valid.
            Err(e) if e.error_len().is_none() => {
                let tail = data.get(e.valid_up_to()..).unwrap_or_default();
                if tail.len() >= self.carry.len() {
                    return Err(Utf8Error);
                }
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len();
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Ends the message: fails if it stopped inside a code point.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validator_split_code_point_accepted() {
        let s = "κόσμε€𝄞".as_bytes();
        for cut in 0..=s.len() {
            let mut v = Utf8Validator::new();
            v.feed(&s[..cut]).unwrap_or_else(|_| panic!("cut {cut}"));
            v.feed(&s[cut..]).unwrap_or_else(|_| panic!("cut {cut}"));
            assert!(v.finish().is_ok());
        }
    }

    #[test]
    fn validator_invalid_continuation_fails_fast() {
        // 0xF4 0x90 is already beyond U+10FFFF: fail without waiting for more bytes.
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[b'a', 0xf4]).is_ok());
        assert_eq!(v.feed(&[0x90]), Err(Utf8Error));
    }

    #[test]
    fn validator_truncated_message_fails_on_finish() {
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xe2, 0x82]).is_ok());
        assert_eq!(v.finish(), Err(Utf8Error));
    }

    fn utf8ish() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..64),
            (any::<String>(), any::<u8>(), 0usize..64).prop_map(|(s, b, at)| {
                let mut v = s.into_bytes();
                let at = at.min(v.len());
                v.insert(at, b);
                v
            }),
        ]
    }

    proptest! {
        #[test]
        fn validator_matches_std_on_arbitrary_splits(
            data in utf8ish(),
            cuts in proptest::collection::vec(0usize..80, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut v = Utf8Validator::new();
            let mut prev = 0;
            let mut ok = true;
            let mut failed_at_end = None;
            for &c in cuts.iter().chain(std::iter::once(&data.len())) {
                if v.feed(&data[prev..c]).is_err() {
                    ok = false;
                    failed_at_end = Some(c);
                    break;
                }
                prev = c;
            }
            if ok {
                ok = v.finish().is_ok();
            }
            let expected = std::str::from_utf8(&data);
            prop_assert_eq!(ok, expected.is_ok());
            // Fail fast: the chunk that failed must contain the first invalid byte.
            if let (Some(end), Err(e)) = (failed_at_end, expected) {
                prop_assert!(e.valid_up_to() < end);
                prop_assert!(e.error_len().is_some());
            }
        }
    }
}
