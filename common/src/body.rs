//! Reading the body of an HTTP answer from a peer (a platform's API, an
//! OAuth provider) within a byte limit: chunk by chunk, refused as soon as
//! it would pass the limit, and a declared `Content-Length` over it before
//! any byte is read. A huge or endless answer costs at most the limit in
//! memory; what was read is dropped with the connection.

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is (or says it is) larger than the limit.
    #[error("an answer larger than {limit} bytes, refused")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The connection failed while reading.
    #[error(transparent)]
    Read(#[from] reqwest::Error),
}

/// Reads `res`'s body, at most `limit` bytes.
///
/// # Errors
/// [`BodyError::TooLarge`] past `limit` (nothing of it is kept),
/// [`BodyError::Read`] when reading fails (a timeout, a reset).
pub async fn read_limited(mut res: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // The chunks as they come, joined once at the end: a buffer grown by
    // doubling would hold up to twice the limit while it is copied.
    let mut chunks = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = res.chunk().await? {
        total += chunk.len();
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        chunks.push(chunk);
    }
    let mut body = Vec::with_capacity(total);
    for chunk in chunks {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `text` cut to at most `max` bytes (at a character boundary), with how
/// long it was when cut: what a peer sent, made fit for a log line, an
/// error or a status page.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_cuts_long_text_at_a_char_boundary() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("aaaaé", 5), "aaaa… (6 bytes)");
        assert_eq!(cut(&"x".repeat(1000), 3), "xxx… (1000 bytes)");
    }
}
