//! Whether a path the gateway routes by means the same to the instance it lands on.
//!
//! The gateway picks a service from a path's first segment, then sends the path on. A URL
//! parser on the way resolves dot segments, percent-encoded ones included
//! (`/login/%2e%2e/payments/x` becomes `/payments/x`), and an instance may decode an
//! encoded slash: a request routed as one service would then reach another route, or
//! another service where instances share a host. So a segment that is a dot segment
//! once decoded, or that decodes to hold a slash or a backslash, is refused whole rather
//! than normalized: no honest client sends one.

/// The first segment of `path` (query excluded) that could resolve to another path, if any.
pub fn ambiguous_segment(path: &str) -> Option<&str> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.split('/').find(|segment| {
        let decoded = decode(segment);
        decoded == "." || decoded == ".." || decoded.contains(['/', '\\'])
    })
}

/// `segment` with `%XX` escapes of ASCII decoded (case-insensitive); other bytes kept.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(u8::is_ascii);
        match escaped {
            Some(byte) => {
                out.push(char::from(byte));
                i += 3;
            }
            None => {
                let c = segment[i..]
                    .chars()
                    .next()
                    .expect("i is on a char boundary");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_however_they_are_spelled() {
        for path in [
            "/login/../payments/accounts",
            "/login/%2e%2e/payments/accounts",
            "/login/%2E%2e/payments",
            "/login/.%2E/payments",
            "/login/./x",
            "/login/%2e/x",
        ] {
            assert!(ambiguous_segment(path).is_some(), "{path}");
        }
    }

    #[test]
    fn encoded_slashes_are_refused() {
        assert_eq!(
            ambiguous_segment("/login/..%2fpayments/x"),
            Some("..%2fpayments")
        );
        assert!(ambiguous_segment("/login/a%5Cb").is_some());
    }

    #[test]
    fn ordinary_paths_pass_with_their_escapes_and_queries() {
        for path in [
            "/payments/accounts/acct-1",
            "/messaging/messages?after=10",
            "/login/users/%ED%95%9C",
            "/web/file.txt",
            "/web/..hidden",
            "/web/a%2",
            "/web/?q=../x",
        ] {
            assert_eq!(ambiguous_segment(path), None, "{path}");
        }
    }
}
