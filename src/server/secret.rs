//! Comparing secrets (session tokens, the admin token) without leaking
//! through timing how much of a guess was right.

use subtle::ConstantTimeEq;

/// True when `got` equals `expected`. Time depends only on the lengths.
pub fn matches(expected: &str, got: &str) -> bool {
    expected.as_bytes().ct_eq(got.as_bytes()).into()
}

/// `n` random bytes from the OS, as lower-case hex (tokens, ids, keys).
pub fn random_hex(n: usize) -> Result<String, std::io::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The token of an `Authorization` value `Bearer <token>` (scheme in any
/// case); `None` for another scheme or an empty token. Every transport and
/// the control plane read credentials through this one parser.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_identical() {
        assert!(matches("abc123", "abc123"));
        assert!(!matches("abc123", "abc124"));
        assert!(!matches("abc123", "abc12"));
        assert!(!matches("abc123", ""));
        assert!(!matches("", "x"));
    }

    #[test]
    fn bearer_tokens_parse() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(" bearer  abc "), Some("abc"));
        for bad in ["Bearer", "Bearer  ", "Basic abc", "abc"] {
            assert_eq!(bearer_token(bad), None, "{bad}");
        }
    }
}
