//! Cosign's keyed signature scheme, offline (no Rekor, no Fulcio):
//! - keys: ECDSA P-256 in cosign's encrypted PEM format (`ENCRYPTED SIGSTORE PRIVATE KEY`,
//!   scrypt + NaCl secretbox) and PKIX `PUBLIC KEY` PEM;
//! - the signed payload: the simple-signing JSON naming the manifest digest;
//! - storage: an OCI manifest tagged `sha256-<hex>.sig` in the artifact's repository, one
//!   `application/vnd.dev.cosign.simplesigning.v1+json` layer per signature with the base64
//!   signature in the `dev.cosignproject.cosign/signature` annotation.
//!
//! Verification happens on the manifest digest before any layer is downloaded or compiled.

use std::path::{Path, PathBuf};

use oci_client::Reference;
use sigstore::cosign::payload::simple_signing::{self, SimpleSigning};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};

use super::cache::BlobCache;
use super::error::{OciError, Result};
use super::manifest::{Descriptor, Manifest, OCI_MANIFEST};
use super::registry::{display, Registry};
use super::source::Source;

/// Media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Config media type of a cosign signature manifest.
const SIG_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The tag cosign stores signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The signature reference for the artifact `reference` with manifest `digest`.
pub fn signature_reference(reference: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        signature_tag(digest),
    )
}

/// A freshly generated key pair in cosign's file formats.
#[derive(Debug)]
pub struct GeneratedKey {
    /// `-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----` (cosign.key).
    pub private_pem: String,
    /// `-----BEGIN PUBLIC KEY-----` (cosign.pub).
    pub public_pem: String,
}

fn key_err(path: &Path, reason: impl std::fmt::Display) -> OciError {
    OciError::Key {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Generate an ECDSA P-256 key pair, the private key encrypted with `password`.
pub fn generate_key(password: &[u8]) -> Result<GeneratedKey> {
    let here = Path::new("<new key>");
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .map_err(|e| key_err(here, e))?;
    let pair = signer.to_sigstore_keypair().map_err(|e| key_err(here, e))?;
    let private_pem = pair
        .private_key_to_encrypted_pem(password)
        .map_err(|e| key_err(here, e))?
        .to_string();
    let public_pem = pair.public_key_to_pem().map_err(|e| key_err(here, e))?;
    Ok(GeneratedKey {
        private_pem,
        public_pem,
    })
}

/// A private key loaded for signing.
pub struct SigningKey {
    signer: sigstore::crypto::SigStoreSigner,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load a cosign private key (encrypted PEM) from `pem` with `password`.
    pub fn from_pem(path: &Path, pem: &[u8], password: &[u8]) -> Result<Self> {
        let pair = SigStoreKeyPair::from_encrypted_pem(pem, password).map_err(|e| {
            key_err(
                path,
                format!("cannot decrypt the private key (wrong password, or not a cosign key): {e}"),
            )
        })?;
        let signer = pair
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(|e| key_err(path, format!("only ECDSA P-256 keys are supported: {e}")))?;
        Ok(SigningKey {
            signer,
            path: path.to_path_buf(),
        })
    }

    /// Load from a file.
    pub fn from_file(path: &Path, password: &[u8]) -> Result<Self> {
        let pem = std::fs::read(path).map_err(|e| OciError::io("reading private key", path, e))?;
        Self::from_pem(path, &pem, password)
    }

    /// Sign `payload`, returning the base64 signature.
    pub fn sign(&self, payload: &[u8]) -> Result<String> {
        use base64::Engine as _;
        let sig = self.signer.sign(payload).map_err(|e| key_err(&self.path, e))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sig))
    }
}

/// A trusted public key.
pub struct PublicKey {
    key: CosignVerificationKey,
    /// Where it came from, for messages.
    pub origin: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parse a `PUBLIC KEY` PEM (cosign.pub).
    pub fn from_pem(origin: &str, pem: &[u8]) -> Result<Self> {
        let key =
            CosignVerificationKey::from_pem(pem, &SigningScheme::ECDSA_P256_SHA256_ASN1).map_err(|e| {
                key_err(
                    Path::new(origin),
                    format!("not an ECDSA P-256 public key in PEM form (cosign.pub): {e}"),
                )
            })?;
        Ok(PublicKey {
            key,
            origin: origin.to_string(),
        })
    }

    /// Read a public key file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let pem = std::fs::read(path).map_err(|e| OciError::io("reading public key", path, e))?;
        Self::from_pem(&path.display().to_string(), &pem)
    }

    fn verifies(&self, payload: &[u8], signature_b64: &str) -> bool {
        self.key
            .verify_signature(Signature::Base64Encoded(signature_b64.as_bytes()), payload)
            .is_ok()
    }
}

/// What must hold before a plugin is used.
#[derive(Debug, Default)]
pub struct SignaturePolicy {
    /// Signatures by any of these keys are accepted.
    pub keys: Vec<PublicKey>,
    /// Accept artifacts with no signature at all (explicit opt-in). A signature that exists but
    /// does not verify is still refused.
    pub allow_unsigned: bool,
}

/// A verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed manifest digest.
    pub digest: String,
    /// The key that verified it.
    pub key: String,
    /// The `docker-reference` the signer named.
    pub signed_reference: String,
}

/// The outcome of applying a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A trusted key signed this digest.
    Signed(Verified),
    /// No signature exists, and the policy allows that.
    UnsignedAllowed,
}

/// The simple-signing payload for `digest` of the repository of `reference`.
pub fn payload(reference: &Reference, digest: &str) -> Vec<u8> {
    let p = SimpleSigning {
        critical: simple_signing::Critical {
            identity: simple_signing::Identity {
                docker_reference: format!("{}/{}", reference.registry(), reference.repository()),
            },
            image: simple_signing::Image {
                docker_manifest_digest: digest.to_string(),
            },
            type_name: simple_signing::CRITICAL_TYPE_NAME.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

/// Sign the manifest `digest` of `reference` and push the signature to its `.sig` tag,
/// appending to signatures already there. Returns the signature reference.
pub async fn sign(
    registry: &Registry,
    reference: &Reference,
    digest: &str,
    key: &SigningKey,
) -> Result<Reference> {
    let sig_ref = signature_reference(reference, digest);
    let payload = payload(reference, digest);
    let signature = key.sign(&payload)?;

    let mut layers = match registry.fetch_manifest(&sig_ref).await {
        Ok(existing) => existing.parse(&display(&sig_ref))?.layers,
        Err(OciError::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut layer = Descriptor::for_bytes(SIMPLE_SIGNING, &payload);
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.to_string(), signature.clone());
    if !layers.contains(&layer) {
        layers.push(layer);
    }
    registry
        .push_blob(&sig_ref, &payload, "signature payload")
        .await?;

    // cosign's signature "image" config: one diff_id per payload layer.
    let config = serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    registry
        .push_blob(&sig_ref, &config_bytes, "signature config")
        .await?;
    let manifest = Manifest::new(Descriptor::for_bytes(SIG_CONFIG, &config_bytes), layers);
    registry
        .push_manifest(&sig_ref, &manifest.to_bytes(), OCI_MANIFEST)
        .await?;
    Ok(sig_ref)
}

/// Whether this process has not yet warned about the unsigned artifact `digest`: the warning is said once
/// per digest, not on every load of the same plugin. Bounded: past 4096 digests it starts over.
fn first_time_unsigned(digest: &str) -> bool {
    static WARNED: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    let set = warned.get_or_insert_with(Default::default);
    if set.len() >= 4096 {
        set.clear();
    }
    set.insert(digest.to_owned())
}

/// Apply `policy` to the artifact `reference` whose manifest digest is `digest`.
pub async fn verify(
    source: &Source,
    cache: Option<&BlobCache>,
    reference: &Reference,
    digest: &str,
    policy: &SignaturePolicy,
) -> Result<Verdict> {
    let shown = display(reference);
    let sig_ref = signature_reference(reference, digest);
    let fetched = match source.fetch_manifest(&sig_ref).await {
        Ok(m) => m,
        Err(OciError::NotFound { .. }) if policy.allow_unsigned => {
            if first_time_unsigned(digest) {
                tracing::warn!(reference = %shown, digest, "using an unsigned artifact: the policy allows unsigned plugins");
            } else {
                tracing::debug!(reference = %shown, digest, "using an unsigned artifact (warned before)");
            }
            return Ok(Verdict::UnsignedAllowed);
        }
        Err(OciError::NotFound { .. }) => {
            return Err(OciError::Unsigned {
                reference: shown,
                digest: digest.to_string(),
                sig_tag: signature_tag(digest),
            })
        }
        Err(e) => return Err(e),
    };
    let bad = |reason: String| OciError::BadSignature {
        reference: shown.clone(),
        digest: digest.to_string(),
        reason,
    };
    if policy.keys.is_empty() {
        return Err(bad(
            "no trusted public key is configured (pass --key cosign.pub)".into()
        ));
    }
    let manifest = fetched.parse(&display(&sig_ref))?;
    let mut reasons = Vec::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let n = i + 1;
        if layer.media_type != SIMPLE_SIGNING {
            reasons.push(format!(
                "layer {n} has media type `{}`, not `{SIMPLE_SIGNING}`",
                layer.media_type
            ));
            continue;
        }
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            reasons.push(format!("layer {n} has no `{SIGNATURE_ANNOTATION}` annotation"));
            continue;
        };
        let payload = source
            .fetch_blob_cached(cache, &sig_ref, layer, "signature payload")
            .await?;
        let Some(key) = policy.keys.iter().find(|k| k.verifies(&payload, signature)) else {
            reasons.push(format!(
                "signature {n} does not verify with the trusted key(s) {}",
                policy
                    .keys
                    .iter()
                    .map(|k| k.origin.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        };
        let parsed: SimpleSigning = match serde_json::from_slice(&payload) {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!("signature {n} payload is not simple-signing JSON: {e}"));
                continue;
            }
        };
        if parsed.critical.type_name != simple_signing::CRITICAL_TYPE_NAME {
            reasons.push(format!(
                "signature {n} payload has type `{}`",
                parsed.critical.type_name
            ));
            continue;
        }
        if !parsed.satisfies_manifest_digest(digest) {
            reasons.push(format!(
                "signature {n} is for {}, not for this digest",
                parsed.critical.image.docker_manifest_digest
            ));
            continue;
        }
        return Ok(Verdict::Signed(Verified {
            digest: digest.to_string(),
            key: key.origin.clone(),
            signed_reference: parsed.critical.identity.docker_reference,
        }));
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "the signature manifest `{}` has no signature layers",
            signature_tag(digest)
        ));
    }
    Err(bad(reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsigned_warning_is_said_once_per_digest() {
        let a = "sha256:aaaa-the-unsigned-warning-test";
        let b = "sha256:bbbb-the-unsigned-warning-test";
        assert!(first_time_unsigned(a));
        assert!(!first_time_unsigned(a));
        assert!(first_time_unsigned(b));
        assert!(!first_time_unsigned(a));
    }

    #[test]
    fn generated_keys_round_trip_and_wrong_keys_or_passwords_fail() -> Result<()> {
        let k = generate_key(b"pw")?;
        assert!(
            k.private_pem.contains("ENCRYPTED SIGSTORE PRIVATE KEY"),
            "{}",
            k.private_pem
        );
        assert!(k.public_pem.contains("BEGIN PUBLIC KEY"));
        let signer = SigningKey::from_pem(Path::new("cosign.key"), k.private_pem.as_bytes(), b"pw")?;
        let public = PublicKey::from_pem("cosign.pub", k.public_pem.as_bytes())?;
        let sig = signer.sign(b"payload")?;
        assert!(public.verifies(b"payload", &sig));
        assert!(!public.verifies(b"payload2", &sig));
        let other = PublicKey::from_pem("other.pub", generate_key(b"x")?.public_pem.as_bytes())?;
        assert!(!other.verifies(b"payload", &sig));
        let err = SigningKey::from_pem(Path::new("cosign.key"), k.private_pem.as_bytes(), b"wrong")
            .expect_err("should fail");
        assert!(
            err.to_string().contains("key `cosign.key`: cannot decrypt"),
            "{err}"
        );
        let err = PublicKey::from_pem("x.pub", b"nonsense").expect_err("should fail");
        assert!(err.to_string().contains("not an ECDSA P-256 public key"), "{err}");
        Ok(())
    }

    #[test]
    fn payload_is_cosign_simple_signing() -> Result<()> {
        let r: Reference = "127.0.0.1:5000/plugins/noop:v1"
            .parse()
            .map_err(|_| OciError::Registry {
                reference: "t".into(),
                message: "parse".into(),
            })?;
        let p: serde_json::Value =
            serde_json::from_slice(&payload(&r, "sha256:00")).map_err(|e| OciError::Registry {
                reference: "t".into(),
                message: e.to_string(),
            })?;
        assert_eq!(p["critical"]["type"], "cosign container image signature");
        assert_eq!(p["critical"]["image"]["docker-manifest-digest"], "sha256:00");
        assert_eq!(
            p["critical"]["identity"]["docker-reference"],
            "127.0.0.1:5000/plugins/noop"
        );
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
        Ok(())
    }
}
