//! Comparing secrets (session tokens, the admin token) without leaking
//! through timing how much of a guess was right.

use subtle::ConstantTimeEq;

/// True when `got` equals `expected`. Time depends only on the lengths.
pub fn matches(expected: &str, got: &str) -> bool {
    expected.as_bytes().ct_eq(got.as_bytes()).into()
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
}
