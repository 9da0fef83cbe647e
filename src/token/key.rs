//! One RSA key: reading PEM key files, the public half Prosody fetches, key generation.
//!
//! PKCS#1 (`BEGIN RSA PRIVATE KEY`) and PKCS#8 (`BEGIN PRIVATE KEY`) files are read; PKCS#8
//! is written. The key is parsed once, so signing does not re-check it every time.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use aws_lc_rs::{rand::SystemRandom, rsa, signature};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::{KeyId, SignError};

/// Smallest RSA modulus accepted for signing.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("key file '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's contents are not a usable private key.
    #[error("key file '{path}': {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what would be right.
        why: String,
    },
}

/// An RSA signing key with its published half.
pub struct RsaKey {
    kid: KeyId,
    pair: rsa::KeyPair,
    public_pem: String,
    public_der: Vec<u8>,
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "RsaKey {{ kid: {}, bits: {} }}", self.kid, self.bits())
    }
}

impl RsaKey {
    /// Reads a PKCS#1 or PKCS#8 PEM private key file.
    pub fn load(path: &Path, kid: KeyId) -> Result<RsaKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        RsaKey::from_pem(&text, kid).map_err(|why| KeyError::Invalid {
            path: path.to_owned(),
            why,
        })
    }

    /// Parses a PKCS#1 or PKCS#8 PEM private key.
    pub fn from_pem(text: &str, kid: KeyId) -> Result<RsaKey, String> {
        let (label, der) = pem_block(text)?;
        let pair = match label.as_str() {
            "RSA PRIVATE KEY" => rsa::KeyPair::from_der(&der),
            "PRIVATE KEY" => rsa::KeyPair::from_pkcs8(&der),
            _ => return Err(wrong_label(&label)),
        }
        .map_err(|e| rejected(e.description_()))?;
        let bits = pair.public_modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(too_small(&format!("{bits} bits")));
        }
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| "cannot encode the public key")?;
        let public_der = spki.as_ref().to_vec();
        Ok(RsaKey {
            kid,
            pair,
            public_pem: pem_encode("PUBLIC KEY", &public_der),
            public_der,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    /// Modulus size.
    pub fn bits(&self) -> usize {
        self.pair.public_modulus_len() * 8
    }

    /// The public key as SPKI PEM (`BEGIN PUBLIC KEY`), what Prosody fetches.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// True when `other` has the same public key (whatever its kid).
    pub fn same_key(&self, other: &RsaKey) -> bool {
        self.public_der == other.public_der
    }

    /// Short fingerprint of the public key (first 8 bytes of its SHA-256), safe to log.
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(&self.public_der)[..8])
    }

    /// The public key as a JWK (RFC 7517): `kty`, `n`, `e`, `kid`, `alg`, `use`.
    pub fn jwk(&self) -> serde_json::Value {
        let public = self.pair.public_key();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        serde_json::json!({
            "kty": "RSA",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
            "kid": self.kid.as_str(),
            "alg": "RS256",
            "use": "sig",
        })
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature of `message`.
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        let rng = SystemRandom::new();
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .map_err(|_| SignError)?;
        Ok(signature)
    }
}

fn too_small(size: &str) -> String {
    format!(
        "RSA key of {size} is too small; use at least {MIN_RSA_BITS} bits \
         (`geobridge keygen` makes 4096)"
    )
}

/// Explains why the crypto library refused a key, in words an operator can act on.
fn rejected(reason: &str) -> String {
    match reason {
        "TooSmall" => too_small(&format!("fewer than {MIN_RSA_BITS} bits")),
        "TooLarge" => "RSA key is larger than 8192 bits; use 2048 to 8192 bits".to_owned(),
        other => format!(
            "not a valid RSA private key ({other}); give an unencrypted PKCS#1 or PKCS#8 PEM \
             RSA key"
        ),
    }
}

fn wrong_label(label: &str) -> String {
    match label {
        "ENCRYPTED PRIVATE KEY" => encrypted(),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            "this is a public key; give the private key (BEGIN PRIVATE KEY)".to_owned()
        }
        "OPENSSH PRIVATE KEY" => {
            "OpenSSH format; convert with `ssh-keygen -p -m PEM -f FILE` or run `geobridge keygen`"
                .to_owned()
        }
        other => format!("PEM block '{other}' is not an RSA private key"),
    }
}

fn encrypted() -> String {
    "the key is encrypted with a passphrase; geobridge needs it unencrypted (file mode 0600): \
     `openssl pkey -in FILE -out NEW`"
        .to_owned()
}

/// Finds the first PEM block and decodes it; refuses encrypted PKCS#1 files.
fn pem_block(text: &str) -> Result<(String, Vec<u8>), String> {
    let start = text
        .find("-----BEGIN ")
        .ok_or("no PEM block (-----BEGIN ...) found; give a PEM private key file")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----").ok_or("unterminated PEM header")?;
    let label = rest[..label_end].to_owned();
    let body = &rest[label_end + 5..];
    let end = body
        .find(&format!("-----END {label}-----"))
        .ok_or_else(|| format!("PEM block '{label}' has no END line"))?;
    let body = &body[..end];
    if body.contains("Proc-Type:") || body.contains("DEK-Info:") {
        return Err(encrypted());
    }
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM body is not base64 ({e})"))?;
    Ok((label, der))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Generates an RSA private key as PKCS#8 PEM; `bits` is 2048, 3072, 4096 or 8192.
pub fn generate_pem(bits: usize) -> Result<String, String> {
    let size = match bits {
        2048 => rsa::KeySize::Rsa2048,
        3072 => rsa::KeySize::Rsa3072,
        4096 => rsa::KeySize::Rsa4096,
        8192 => rsa::KeySize::Rsa8192,
        other => {
            return Err(format!(
                "{other} bits is not offered; use 2048, 3072, 4096 or 8192"
            ));
        }
    };
    let pair = rsa::KeyPair::generate(size).map_err(|_| "key generation failed".to_owned())?;
    let der = pair
        .as_der()
        .map_err(|_| "cannot encode the new key".to_owned())?;
    Ok(pem_encode("PRIVATE KEY", der.as_ref()))
}

/// Writes `pem` to a new file readable by its owner only; never overwrites. The file
/// appears whole or not at all (written beside it, then linked to its name), so a process
/// stopped halfway leaves no partial key behind to refuse at the next start.
pub fn write_private_pem(path: &Path, pem: &str) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut draft = path.as_os_str().to_owned();
    draft.push(format!(".{}.partial", std::process::id()));
    let draft = std::path::PathBuf::from(draft);
    // A new file, never one that is there already (nor a link planted under its name), so
    // the key is ours alone from the first byte.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&draft).map_err(|source| KeyError::Io {
        path: draft.clone(),
        source,
    })?;
    let written = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all());
    // A hard link, unlike a rename, fails when the name is taken.
    let linked = written.and_then(|()| std::fs::hard_link(&draft, path));
    let _ = std::fs::remove_file(&draft);
    linked.map_err(io)
}

/// True when users other than the owner may read or write the file.
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kid() -> KeyId {
        KeyId::parse("k").expect("valid")
    }

    /// A link planted where the key's draft is written is not followed: the write fails
    /// and the file it points to keeps its bytes.
    #[cfg(unix)]
    #[test]
    fn a_planted_draft_is_not_written_through() {
        let dir = tempfile::tempdir().expect("dir");
        let (victim, key) = (dir.path().join("victim"), dir.path().join("k.pem"));
        std::fs::write(&victim, "data").expect("victim");
        let draft = dir
            .path()
            .join(format!("k.pem.{}.partial", std::process::id()));
        std::os::unix::fs::symlink(&victim, &draft).expect("link");
        assert!(write_private_pem(&key, "PEM").is_err());
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "data");
        assert!(!key.exists());
    }

    /// Wrong kinds of PEM are refused with a message saying what to give instead.
    #[test]
    fn wrong_pem_kinds_are_explained() {
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = RsaKey::from_pem(public, kid()).expect_err("public key refused");
        assert!(err.contains("this is a public key"), "{err}");
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----";
        let err = RsaKey::from_pem(enc, kid()).expect_err("refused");
        assert!(err.contains("encrypted with a passphrase"), "{err}");
        let err = RsaKey::from_pem("hello", kid()).expect_err("refused");
        assert!(err.contains("no PEM block"), "{err}");
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = RsaKey::from_pem(junk, kid()).expect_err("refused");
        assert!(err.contains("not a valid RSA private key"), "{err}");
    }

    /// A generated key loads back, is 2048 bits, and its public half is SPKI PEM.
    #[test]
    fn generated_key_round_trips() {
        let pem = generate_pem(2048).expect("generated");
        let key = RsaKey::from_pem(&pem, kid()).expect("loads");
        assert_eq!(key.bits(), 2048);
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let jwk = key.jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["e"], "AQAB", "exponent 65537");
        let n = URL_SAFE_NO_PAD
            .decode(jwk["n"].as_str().expect("n"))
            .expect("base64url");
        assert_eq!(n.len(), 256, "2048-bit modulus without a leading zero");
        let again = RsaKey::from_pem(&pem, KeyId::parse("other").expect("valid")).expect("ok");
        assert!(key.same_key(&again));
        assert_eq!(key.fingerprint().len(), 16);
    }
}
