//! `sha256:<hex>` digests: computing, parsing and streaming verification.

use sha2::{Digest as _, Sha256};

use super::error::{OciError, Result};

/// The digest of `bytes` in OCI form, `sha256:<64 hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Check that `digest` is a well-formed sha256 digest and return its hex part.
/// Other algorithms are refused: the cache and the plugin runtime key everything by sha256.
pub fn hex_part<'a>(reference: &str, digest: &'a str) -> Result<&'a str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| OciError::InvalidReference {
            reference: reference.to_string(),
            reason: format!("digest `{digest}` is not a sha256 digest (expected `sha256:<64 hex digits>`)"),
        })?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(OciError::InvalidReference {
            reference: reference.to_string(),
            reason: format!("digest `{digest}` must be `sha256:` followed by 64 lowercase hex digits"),
        });
    }
    Ok(hex)
}

/// Incremental sha256 with a byte count, for streamed downloads.
#[derive(Debug, Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest in OCI form.
    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.inner.finalize()))
    }
}

/// Verify `bytes` against an expected digest and size, naming `what` in the error.
pub fn verify(
    reference: &str,
    what: &str,
    expected_digest: &str,
    expected_size: Option<u64>,
    bytes: &[u8],
) -> Result<()> {
    if let Some(size) = expected_size {
        if bytes.len() as u64 != size {
            return Err(OciError::SizeMismatch {
                reference: reference.to_string(),
                what: what.to_string(),
                digest: expected_digest.to_string(),
                expected: size,
                received: bytes.len() as u64,
            });
        }
    }
    let actual = sha256(bytes);
    if actual != expected_digest {
        return Err(OciError::DigestMismatch {
            reference: reference.to_string(),
            what: what.to_string(),
            expected: expected_digest.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn malformed_digests_are_refused_with_the_reason() {
        let err = hex_part("r", "md5:abc")
            .map(str::to_owned)
            .expect_err("should fail")
            .to_string();
        assert!(err.contains("not a sha256 digest"), "{err}");
        let err = hex_part("r", "sha256:ABC")
            .map(str::to_owned)
            .expect_err("should fail")
            .to_string();
        assert!(err.contains("64 lowercase hex"), "{err}");
    }

    #[test]
    fn verify_reports_truncation_before_hash() {
        let err = verify("r", "layer", &sha256(b"abcd"), Some(4), b"ab").expect_err("should fail");
        assert!(
            matches!(
                err,
                OciError::SizeMismatch {
                    expected: 4,
                    received: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = verify("r", "layer", &sha256(b"abcd"), Some(4), b"abce").expect_err("should fail");
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    }
}
