//! The error type of the OCI layer. Every variant names the reference (or file) and says
//! what to do about it; the texts are what `stackhost` prints.

use std::path::PathBuf;

/// Result alias for the OCI layer.
pub type Result<T, E = OciError> = std::result::Result<T, E>;

/// Everything that can go wrong between a reference and verified bytes.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference string does not parse.
    #[error("invalid OCI reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// Plain HTTP was about to be used for a registry that is neither loopback nor marked insecure.
    #[error(
        "refusing plain HTTP to registry `{registry}`: only loopback registries or registries \
         marked insecure (--insecure {registry}) may use http://"
    )]
    InsecureRegistry { registry: String },

    /// The tag or digest does not exist in the repository.
    #[error("`{reference}` not found: the registry has no manifest for this tag or digest (check the tag with `stackhost release tags` or the registry UI)")]
    NotFound { reference: String },

    /// The registry wants credentials we do not have, or rejected the ones we sent.
    #[error("`{reference}`: registry `{registry}` answered 401 Unauthorized; provide credentials (docker config.json, a dockerconfigjson Secret, or --username/--password)")]
    Unauthorized { reference: String, registry: String },

    /// Authenticated, but not allowed.
    #[error("`{reference}`: registry `{registry}` answered 403 Forbidden; the credentials are valid but lack {operation} access to this repository")]
    Forbidden {
        reference: String,
        registry: String,
        operation: &'static str,
    },

    /// 5xx, timeouts or connection errors that persisted through every retry.
    #[error("`{reference}`: registry `{registry}` unavailable after {attempts} attempts: {last_error}")]
    Unavailable {
        reference: String,
        registry: String,
        attempts: u32,
        last_error: String,
    },

    /// Any other registry answer we cannot use.
    #[error("`{reference}`: registry error: {message}")]
    Registry { reference: String, message: String },

    /// A manifest, config or layer has a media type this host does not read.
    #[error("`{reference}`: {what} has media type `{found}`, expected {expected}")]
    WrongMediaType {
        reference: String,
        what: String,
        found: String,
        expected: String,
    },

    /// The bytes received do not hash to the digest they were requested by.
    #[error("`{reference}`: {what} digest mismatch: expected {expected}, got {actual}; the registry or a mirror served different content, refusing it")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// Fewer (or more) bytes arrived than the descriptor declares.
    #[error("`{reference}`: {what} {digest} is truncated or oversized: descriptor says {expected} bytes, received {received}")]
    SizeMismatch {
        reference: String,
        what: String,
        digest: String,
        expected: u64,
        received: u64,
    },

    /// A manifest or blob exceeds the configured cap.
    #[error("`{reference}`: {what} is {size} bytes, over the cap of {cap} bytes (raise it with --max-{flag}-bytes if this is expected)")]
    TooLarge {
        reference: String,
        what: String,
        size: u64,
        cap: u64,
        flag: &'static str,
    },

    /// The artifact is not a Wasm plugin this host understands.
    #[error("`{reference}`: not a plugin artifact: {reason}")]
    NotAPlugin { reference: String, reason: String },

    /// The component declares a world the host does not support.
    #[error("`{reference}`: unsupported world: {reason}")]
    UnsupportedWorld { reference: String, reason: String },

    /// No signature was found and the policy requires one.
    #[error("`{reference}` ({digest}) is not signed: no cosign signature at tag `{sig_tag}`; sign it with `stackhost plugin sign` or allow unsigned plugins explicitly")]
    Unsigned {
        reference: String,
        digest: String,
        sig_tag: String,
    },

    /// Signatures exist but none verifies with the trusted keys.
    #[error("`{reference}` ({digest}): signature rejected: {reason}")]
    BadSignature {
        reference: String,
        digest: String,
        reason: String,
    },

    /// A key file could not be read, decrypted or written.
    #[error("key `{path}`: {reason}")]
    Key { path: PathBuf, reason: String },

    /// Credentials could not be read.
    #[error("credentials from {origin}: {reason}")]
    Credentials { origin: String, reason: String },

    /// An OCI image layout directory or tarball is malformed.
    #[error("OCI layout `{path}`: {reason}")]
    Layout { path: PathBuf, reason: String },

    /// A cluster-stack release directory or artifact is malformed.
    #[error("release `{origin}`: {reason}")]
    Release { origin: String, reason: String },

    /// Local file system trouble (cache, layout, output files).
    #[error("{action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    /// Shorthand for [`OciError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OciError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Whether retrying the same request elsewhere (another mirror) may help.
    pub fn is_content_error(&self) -> bool {
        matches!(
            self,
            OciError::DigestMismatch { .. } | OciError::SizeMismatch { .. }
        )
    }
}
