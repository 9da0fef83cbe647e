//! The RSA keys in service: one signs, every one is published, each under its own kid.
//!
//! Rotation without downtime needs two keys published at once: the new one before it signs
//! (so Prosody can fetch it when the first token arrives) and the old one until the last
//! token it signed has expired. Prosody caches a key per kid forever, so a kid must name one
//! key for its whole life; the keyring refuses anything else, at start-up and on reload.

use std::path::PathBuf;

use super::{KeyId, RsaKey};

/// Why a kid may never change its key, for error messages.
const KID_IS_FOREVER: &str = "Prosody caches the public key of a kid forever, so a token \
     signed by another key under the same kid would fail there; give the new key a new kid";

/// Where one key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// The kid it is published under.
    pub kid: KeyId,
    /// PKCS#1 or PKCS#8 PEM private key file.
    pub file: PathBuf,
    /// True for the one key that signs new tokens.
    pub signing: bool,
}

/// The published keys and the one that signs.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<RsaKey>,
    signing: usize,
}

impl Keyring {
    /// Reads every key file, listing every problem, each naming its file or kid.
    pub fn load(sources: &[KeySource]) -> Result<Keyring, Vec<String>> {
        let mut problems = Vec::new();
        let mut loaded: Vec<(RsaKey, &KeySource)> = Vec::new();
        for source in sources {
            match RsaKey::load(&source.file, source.kid.clone()) {
                Ok(key) => loaded.push((key, source)),
                Err(error) => problems.push(error.to_string()),
            }
        }
        let mut keys: Vec<RsaKey> = Vec::new();
        let mut signing = Vec::new();
        for (key, source) in loaded {
            match keys.iter().position(|k| k.kid() == key.kid()) {
                Some(i) if keys[i].same_key(&key) => {}
                Some(_) => problems.push(format!(
                    "key id '{}': two different keys (one in '{}'); {KID_IS_FOREVER}",
                    key.kid(),
                    source.file.display()
                )),
                None => keys.push(key),
            }
            if source.signing && !signing.contains(&source.kid) {
                signing.push(source.kid.clone());
            }
        }
        if signing.len() != 1 && problems.is_empty() {
            problems.push(format!(
                "exactly one key must sign (signing = true); found {}",
                signing.len()
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let signing = keys
            .iter()
            .position(|k| *k.kid() == signing[0])
            .expect("the signing kid was loaded");
        Ok(Keyring { keys, signing })
    }

    /// The key that signs new tokens.
    pub fn signing(&self) -> &RsaKey {
        &self.keys[self.signing]
    }

    /// Every published key, the signing one included.
    pub fn keys(&self) -> &[RsaKey] {
        &self.keys
    }

    /// The published key whose kid hashes to `hash` (lower-case hex SHA-256).
    pub fn public_pem(&self, hash: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.kid().hash() == hash)
            .map(RsaKey::public_pem)
    }

    /// The JWKS document (RFC 7517) of every published key.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self.keys.iter().map(RsaKey::jwk).collect();
        serde_json::json!({ "keys": keys })
    }

    /// Refuses a replacement that publishes another key under a kid this keyring publishes.
    pub fn check_successor(&self, next: &Keyring) -> Result<(), String> {
        for key in &next.keys {
            let changed = self
                .keys
                .iter()
                .any(|old| old.kid() == key.kid() && !old.same_key(key));
            if changed {
                return Err(format!(
                    "key id '{}' is published with another key already; {KID_IS_FOREVER}",
                    key.kid()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::generate_pem;

    fn write_key(dir: &std::path::Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, generate_pem(2048).expect("generated")).expect("write");
        path
    }

    fn source(kid: &str, file: &std::path::Path, signing: bool) -> KeySource {
        KeySource {
            kid: KeyId::parse(kid).expect("valid"),
            file: file.to_owned(),
            signing,
        }
    }

    /// Two keys are both published; the one marked signing signs; the JWKS lists both.
    #[test]
    fn publishes_all_and_signs_with_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (
            write_key(dir.path(), "a.pem"),
            write_key(dir.path(), "b.pem"),
        );
        let ring =
            Keyring::load(&[source("old", &a, false), source("new", &b, true)]).expect("loads");
        assert_eq!(ring.signing().kid().as_str(), "new");
        let old_hash = KeyId::parse("old").expect("valid").hash();
        assert!(ring.public_pem(&old_hash).is_some());
        assert!(ring.public_pem(&"0".repeat(64)).is_none());
        let jwks = ring.jwks();
        let kids: Vec<_> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect();
        assert_eq!(kids, ["old", "new"]);
    }

    /// One kid naming two different keys is refused with Prosody's reason; the same key
    /// listed twice is fine.
    #[test]
    fn one_kid_one_key() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (
            write_key(dir.path(), "a.pem"),
            write_key(dir.path(), "b.pem"),
        );
        let err =
            Keyring::load(&[source("k", &a, true), source("k", &b, false)]).expect_err("refused");
        assert!(err[0].contains("two different keys"), "{err:?}");
        assert!(err[0].contains("caches the public key of a kid forever"));
        assert!(Keyring::load(&[source("k", &a, true), source("k", &a, false)]).is_ok());
    }

    /// A reload may add and drop kids but never give a published kid another key.
    #[test]
    fn successor_keeps_kids_stable() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (
            write_key(dir.path(), "a.pem"),
            write_key(dir.path(), "b.pem"),
        );
        let first = Keyring::load(&[source("k1", &a, true)]).expect("loads");
        let rotated =
            Keyring::load(&[source("k1", &a, false), source("k2", &b, true)]).expect("loads");
        assert!(first.check_successor(&rotated).is_ok());
        let hijack = Keyring::load(&[source("k1", &b, true)]).expect("loads");
        let err = first.check_successor(&hijack).expect_err("refused");
        assert!(err.contains("'k1'"), "{err}");
    }

    /// No signing key, or two, is a problem.
    #[test]
    fn exactly_one_signs() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (
            write_key(dir.path(), "a.pem"),
            write_key(dir.path(), "b.pem"),
        );
        let none = Keyring::load(&[source("a", &a, false)]).expect_err("refused");
        assert!(none[0].contains("found 0"), "{none:?}");
        let two = Keyring::load(&[source("a", &a, true), source("b", &b, true)]);
        assert!(two.expect_err("refused")[0].contains("found 2"));
    }
}
