//! Topics as NATS subjects: `<prefix>.<topic>`.
//!
//! A gateway topic is any string of 1..=256 bytes; a NATS subject is dot-separated
//! non-empty tokens without whitespace, where `*` and `>` are wildcards. So a topic is
//! escaped on the way out and unescaped on the way in, one-to-one:
//! - printable ASCII other than `*`, `>` and `%` stays as it is, so `news.sports` is the
//!   subject `sluice.news.sports` and a NATS client can subscribe to `sluice.news.>`;
//! - every other byte (space, control, non-ASCII UTF-8, `*`, `>`, `%`) becomes `%XX`;
//! - dots stay token separators only when no token would be empty; a topic such as
//!   `a..b`, `.a` or `a.` has every dot escaped as `%2E`.

/// Whether `prefix` is usable as the subject prefix: non-empty tokens of kept bytes.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.bytes().all(|b| kept(b) && b != b'%'))
}

/// Whether byte `b` of a topic goes into the subject unescaped (dots aside).
fn kept(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'*' | b'>' | b'%' | b'.')
}

/// The subject `<prefix>.<escaped topic>`.
pub fn for_topic(prefix: &str, topic: &str) -> String {
    let dots_split = !topic.is_empty() && topic.split('.').all(|t| !t.is_empty());
    let mut out = String::with_capacity(prefix.len() + 1 + topic.len());
    out.push_str(prefix);
    out.push('.');
    for &b in topic.as_bytes() {
        if kept(b) || (b == b'.' && dots_split) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The topic of `subject` under `prefix`, or `None` when the subject is not one
/// [`for_topic`] makes (another prefix, a bad escape, not UTF-8, empty).
pub fn topic_of(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut out = Vec::with_capacity(rest.len());
    let mut bytes = rest.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(bytes.next()?)?;
            let lo = hex_value(bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    let topic = String::from_utf8(out).ok()?;
    (!topic.is_empty()).then_some(topic)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// What NATS accepts for publishing: non-empty tokens, no whitespace, no wildcards.
    fn nats_publishable(s: &str) -> bool {
        s.split('.').all(|t| {
            !t.is_empty() && !t.contains(|c: char| c.is_whitespace()) && t != "*" && t != ">"
        }) && !s.contains(['*', '>'])
    }

    #[test]
    fn subject_plain_and_dotted_topics_stay_readable() {
        assert_eq!(for_topic("sluice", "prices"), "sluice.prices");
        assert_eq!(for_topic("sluice", "news.sports"), "sluice.news.sports");
        assert_eq!(for_topic("a.b", "t-1_x:y/z"), "a.b.t-1_x:y/z");
    }

    #[test]
    fn subject_unsafe_bytes_escaped() {
        assert_eq!(for_topic("s", "a b"), "s.a%20b");
        assert_eq!(for_topic("s", "a..b"), "s.a%2E%2Eb");
        assert_eq!(for_topic("s", ".a"), "s.%2Ea");
        assert_eq!(for_topic("s", "*"), "s.%2A");
        assert_eq!(for_topic("s", ">"), "s.%3E");
        assert_eq!(for_topic("s", "50%"), "s.50%25");
        assert_eq!(for_topic("s", "é"), "s.%C3%A9");
        assert_eq!(topic_of("s", "s.%C3%A9").unwrap(), "é");
    }

    #[test]
    fn subject_foreign_or_malformed_rejected() {
        assert_eq!(topic_of("s", "other.t"), None);
        assert_eq!(topic_of("s", "s."), None);
        assert_eq!(topic_of("s", "s"), None);
        assert_eq!(topic_of("s", "st.x"), None);
        assert_eq!(topic_of("s", "s.%G0"), None);
        assert_eq!(topic_of("s", "s.%2"), None);
        assert_eq!(topic_of("s", "s.%FF"), None, "not UTF-8");
    }

    #[test]
    fn subject_prefix_rules() {
        assert!(valid_prefix("sluice"));
        assert!(valid_prefix("org.sluice.prod"));
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "50%"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn subject_round_trip_and_publishable(topic in "\\PC{1,40}|[a-z.]{1,12}|[ -~]{1,20}") {
            let subject = for_topic("sluice.p", &topic);
            prop_assert!(nats_publishable(&subject), "{subject}");
            prop_assert_eq!(topic_of("sluice.p", &subject), Some(topic));
        }
    }
}
