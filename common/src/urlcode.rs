//! Percent-encoding of names in URLs (management API paths) and decoding
//! of path segments and query strings.

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (invalid UTF-8 is replaced); `plus_is_space` for
/// query strings, not for path segments.
pub fn decode(s: &str, plus_is_space: bool) -> String {
    String::from_utf8_lossy(&decode_bytes(s, plus_is_space)).into_owned()
}

/// Decodes `%XX` escapes into bytes, which need not be UTF-8 (see
/// [`decode`]); a `%` not followed by two hex digits stays as it is.
pub fn decode_bytes(s: &str, plus_is_space: bool) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_plus() {
        for s in ["a b", "x/y?z#w", "é%", "chat.unrouted", ""] {
            assert_eq!(decode(&encode(s), false), s);
        }
        assert_eq!(decode("a+b", true), "a b");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode_bytes("a%00%FF%zz%4", false), b"a\0\xff%zz%4");
        assert_eq!(decode("%FF", false), "\u{fffd}");
    }
}
