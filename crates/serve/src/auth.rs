//! Access tokens: loading them from a file and checking `Authorization: Bearer …` in constant time.
//!
//! Tokens are kept only as SHA-256 digests. A presented token is hashed and compared with every
//! configured digest using [`subtle::ConstantTimeEq`], without stopping at a match, so neither the
//! position of a differing byte, nor the token's length, nor which token matched shows in the
//! time the check takes.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::Error;

/// Shortest accepted token, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// The configured tokens (as digests).
#[derive(Clone, Default)]
pub struct TokenSet {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.digests.len())
    }
}

impl TokenSet {
    /// Tokens from strings (each must have at least [`MIN_TOKEN_LEN`] characters and no whitespace).
    pub fn new<S: AsRef<str>>(tokens: &[S]) -> Result<Self, String> {
        let mut digests = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let t = t.as_ref();
            if t.chars().count() < MIN_TOKEN_LEN || t.chars().any(char::is_whitespace) || !t.is_ascii() {
                return Err(format!(
                    "token {} must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces (e.g. from `openssl rand -hex 32`)",
                    i + 1
                ));
            }
            digests.push(Sha256::digest(t.as_bytes()).into());
        }
        Ok(TokenSet { digests })
    }

    /// Reads a token file: one token per line, blank lines and lines starting with `#` ignored.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let err = |detail: String| Error::TokenFile { path: path.to_path_buf(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let tokens: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        if tokens.is_empty() {
            return Err(err("holds no token (one per line; blank lines and # comments are ignored)".into()));
        }
        TokenSet::new(&tokens).map_err(err)
    }

    /// Whether no token is configured (access is open).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// The index of the token `presented` equals, checked in constant time against all tokens.
    pub fn verify(&self, presented: &str) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, d) in self.digests.iter().enumerate() {
            let eq = d.ct_eq(&digest);
            index = u64::conditional_select(&index, &(i as u64), eq);
            found |= eq;
        }
        bool::from(found).then_some(index as usize)
    }

    /// Checks an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
    pub fn verify_header(&self, value: &str) -> Option<usize> {
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn verifies_each_token_and_rejects_others() {
        let set = TokenSet::new(&[A, B]).expect("valid tokens");
        assert_eq!(set.verify(A), Some(0));
        assert_eq!(set.verify(B), Some(1));
        assert_eq!(set.verify("aaaaaaaaaaaaaaaaaaaaaaab"), None);
        assert_eq!(set.verify(&A[..20]), None, "a prefix is not the token");
        assert_eq!(set.verify(&format!("{A}a")), None, "an extension is not the token");
        assert_eq!(set.verify(""), None);
        assert_eq!(set.verify_header(&format!("Bearer {B}")), Some(1));
        assert_eq!(set.verify_header(&format!("bearer  {A} ")), Some(0));
        assert_eq!(set.verify_header(&format!("Basic {A}")), None);
        assert_eq!(set.verify_header(A), None);
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(TokenSet::new(&["short"]).is_err());
        assert!(TokenSet::new(&["has a space in the middle"]).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("tokens");
        std::fs::write(&f, "# only a comment\n\n").expect("write");
        let e = TokenSet::from_file(&f).expect_err("empty token file");
        assert!(e.to_string().contains("holds no token"), "{e}");
        std::fs::write(&f, format!("# ops\n{A}\n\n  {B}  \n")).expect("write");
        assert_eq!(TokenSet::from_file(&f).expect("two tokens").len(), 2);
    }

    #[test]
    fn comparison_is_over_fixed_length_digests() {
        // The stored form is a 32-byte digest whatever the token's length, and the presented token is
        // hashed before comparing: the comparison itself never sees the secret's length or bytes.
        let set = TokenSet::new(&[A, &"c".repeat(200)]).expect("valid tokens");
        assert!(set.digests.iter().all(|d| d.len() == 32));
        assert_eq!(set.verify(&"c".repeat(200)), Some(1));
        assert_eq!(set.verify(&"c".repeat(199)), None);
    }
}
