//! Jitsi tokens: signing keys, claims, the public key Prosody fetches, key files.
//!
//! Tokens are JWS compact strings that Prosody's token plugin accepts: RS256 with a `kid`
//! (Prosody fetches `<asap_key_server>/<sha256 hex of kid>.pem`) or HS256 with a shared
//! secret. The RSA key is parsed once at start-up and signed with by aws-lc, whose speed is
//! close to OpenSSL's; PKCS#1 and PKCS#8 PEM files are read, PKCS#8 is written.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use aws_lc_rs::{hmac, rand::SystemRandom, rsa, signature};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::room::User;

/// Smallest RSA modulus accepted for signing.
pub const MIN_RSA_BITS: usize = 2048;

/// A key id (`kid`), such as `CWMKey`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Accepts 1-64 characters of `A-Z a-z 0-9 . _ -`.
    pub fn parse(value: &str) -> Result<KeyId, String> {
        let fits = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if fits {
            Ok(KeyId(value.to_owned()))
        } else {
            Err(format!(
                "key id '{value}' must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lower-case hex SHA-256 of the id: the file name Prosody asks for, without `.pem`.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
        .map_err(|e| format!("not a valid RSA private key ({e})"))?;
        let bits = pair.public_modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
            ));
        }
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| "cannot encode the public key")?;
        let public_pem = pem_encode("PUBLIC KEY", spki.as_ref());
        Ok(RsaKey {
            kid,
            pair,
            public_pem,
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

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        let rng = SystemRandom::new();
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .map_err(|_| SignError)?;
        Ok(signature)
    }
}

fn wrong_label(label: &str) -> String {
    match label {
        "ENCRYPTED PRIVATE KEY" => {
            "the key is encrypted; geobridge needs it unencrypted (file mode 0600)".to_owned()
        }
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

/// Finds the first PEM block and decodes it; refuses encrypted PKCS#1 files.
fn pem_block(text: &str) -> Result<(String, Vec<u8>), String> {
    let start = text
        .find("-----BEGIN ")
        .ok_or("no PEM block (-----BEGIN ...) found")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----").ok_or("unterminated PEM header")?;
    let label = rest[..label_end].to_owned();
    let body = &rest[label_end + 5..];
    let end = body
        .find(&format!("-----END {label}-----"))
        .ok_or_else(|| format!("PEM block '{label}' has no END line"))?;
    let body = &body[..end];
    if body.contains("Proc-Type:") || body.contains("DEK-Info:") {
        return Err("the key is encrypted; geobridge needs it unencrypted (file mode 0600)".into());
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

/// Writes `pem` to a new file readable by its owner only; never overwrites.
pub fn write_private_pem(path: &Path, pem: &str) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// `geobridge keygen`: writes a new key and says what to do next.
pub fn keygen_report(out: &Path, bits: usize, kid: &str) -> Result<String, String> {
    let kid = KeyId::parse(kid)?;
    let pem = generate_pem(bits)?;
    write_private_pem(out, &pem).map_err(|e| e.to_string())?;
    let key = RsaKey::from_pem(&pem, kid.clone())?;
    Ok(format!(
        "wrote {bits}-bit private key to {} (mode 0600)\n\n{}\nkey id: {kid}\n\
         Prosody fetches this key from: <asap_key_server>/{}.pem\n\n\
         next steps:\n\
         1. start geobridge with JITSI_RSA_JWT_KEY_FILE={} and GEOBRIDGE_JITSI_KEY_ID={kid}\n\
         2. in Prosody's VirtualHost: authentication = \"token\", app_id = \"CodeWithMe\",\n\
         \x20  asap_key_server = \"http://<geobridge host>:<port>/asap\"",
        out.display(),
        key.public_pem(),
        kid.hash(),
        out.display(),
    ))
}

/// How tokens are made.
pub enum Signer {
    /// RS256 with a key id.
    Rs256(RsaKey),
    /// HS256 with Prosody's `app_secret`.
    Hs256(Box<hmac::Key>),
    /// No token: a public Jitsi.
    None,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Rs256(key) => write!(f, "Rs256({key:?})"),
            Signer::Hs256(_) => f.write_str("Hs256(<secret>)"),
            Signer::None => f.write_str("None"),
        }
    }
}

/// Signing failed inside the crypto library.
#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

impl Signer {
    /// A signer for HS256 with this shared secret.
    pub fn hs256(secret: &[u8]) -> Signer {
        Signer::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The key id put in tokens, when there is one.
    pub fn kid(&self) -> Option<&KeyId> {
        match self {
            Signer::Rs256(key) => Some(key.kid()),
            _ => None,
        }
    }

    /// The published public key whose id hashes to `hash`, as PEM.
    pub fn public_pem(&self, hash: &str) -> Option<&str> {
        match self {
            Signer::Rs256(key) if key.kid().hash() == hash => Some(key.public_pem()),
            _ => None,
        }
    }

    /// Signs `claims`; `Ok(None)` in no-token mode.
    pub fn sign(&self, claims: &Claims<'_>) -> Result<Option<String>, SignError> {
        let header = match self {
            Signer::Rs256(key) => {
                serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": key.kid().as_str()})
            }
            Signer::Hs256(_) => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            Signer::None => return Ok(None),
        };
        let header = serde_json::to_vec(&header).map_err(|_| SignError)?;
        let payload = serde_json::to_vec(claims).map_err(|_| SignError)?;
        let mut jws = URL_SAFE_NO_PAD.encode(header);
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = match self {
            Signer::Rs256(key) => key.sign(jws.as_bytes())?,
            Signer::Hs256(secret) => hmac::sign(secret, jws.as_bytes()).as_ref().to_vec(),
            Signer::None => return Ok(None),
        };
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(Some(jws))
    }
}

/// The claims Prosody's token plugin checks, plus the user and the chosen region.
#[derive(Debug, Clone, Serialize)]
pub struct Claims<'a> {
    /// Prosody's `app_id`.
    pub iss: &'a str,
    /// Audience; `jitsi` by convention.
    pub aud: &'a str,
    /// The XMPP domain, or `*`.
    pub sub: &'a str,
    /// The room, exactly as the client joins it.
    pub room: &'a str,
    /// Expiry, seconds since 1970.
    pub exp: u64,
    /// Not before, seconds since 1970, backdated for clock skew.
    pub nbf: u64,
    /// Issued at, seconds since 1970.
    pub iat: u64,
    /// Who joins and where.
    pub context: Context<'a>,
}

/// The `context` claim.
#[derive(Debug, Clone, Serialize)]
pub struct Context<'a> {
    /// The user, as Jitsi shows them.
    pub user: &'a User,
    /// The region geobridge chose.
    pub region: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key URL for Code With Me's `CWMKey` is the one DESIGN.md quotes.
    #[test]
    fn key_id_hash_matches_prosody_path() {
        let kid = KeyId::parse("CWMKey").expect("valid");
        assert_eq!(
            kid.hash(),
            "8791edb7d806447dd0aaa98a2b568ad792696ed4d885f23b89f6beb7f7c4f44e"
        );
        assert!(KeyId::parse("bad kid").is_err());
        assert!(KeyId::parse("").is_err());
    }

    /// Wrong kinds of PEM are refused with a message saying what to give instead.
    #[test]
    fn wrong_pem_kinds_are_explained() {
        let kid = || KeyId::parse("k").expect("valid");
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = RsaKey::from_pem(public, kid()).expect_err("public key refused");
        assert!(err.contains("public key"), "{err}");
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----";
        assert!(
            RsaKey::from_pem(enc, kid())
                .expect_err("refused")
                .contains("encrypted")
        );
        assert!(
            RsaKey::from_pem("hello", kid())
                .expect_err("refused")
                .contains("no PEM")
        );
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(
            RsaKey::from_pem(junk, kid())
                .expect_err("refused")
                .contains("not a valid")
        );
    }

    /// A generated key loads back, is 2048 bits, and its public half is SPKI PEM.
    #[test]
    fn generated_key_round_trips() {
        let pem = generate_pem(2048).expect("generated");
        let key = RsaKey::from_pem(&pem, KeyId::parse("k").expect("valid")).expect("loads");
        assert_eq!(key.bits(), 2048);
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }
}
