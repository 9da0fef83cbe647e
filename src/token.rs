//! Jitsi tokens: signing keys, claims, the public keys Prosody fetches, key files.
//!
//! Tokens are JWS compact strings that Prosody's token plugin accepts: RS256 with a `kid`
//! (Prosody fetches `<asap_key_server>/<sha256 hex of kid>.pem`) or HS256 with a shared
//! secret. RSA keys are parsed once and signed with by aws-lc, whose speed is close to
//! OpenSSL's. The claims' issuer, audience and subject come from a [`Profile`] the caller
//! passes, so each shard of a deployment can have its own.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::room::User;

mod key;
mod keyring;
mod prosody;

pub use key::write_private_pem;
pub use key::{KeyError, MIN_RSA_BITS, RsaKey, generate_pem, readable_by_others};
pub use keyring::{KeySource, Keyring};
pub use prosody::{ProsodyHost, Verification, prosody_config};

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

/// `geobridge keygen`: writes a new key and says what to do next.
pub fn keygen_report(out: &Path, bits: usize, kid: &str) -> Result<String, String> {
    let kid = KeyId::parse(kid)?;
    let pem = generate_pem(bits)?;
    write_private_pem(out, &pem).map_err(|e| e.to_string())?;
    let key = RsaKey::from_pem(&pem, kid.clone())?;
    let (path, hash) = (out.display(), kid.hash());
    Ok(format!(
        "wrote {bits}-bit private key to {path} (mode 0600)\n\n{}\nkey id: {kid}\n\
         Prosody fetches this key from: <asap_key_server>/{hash}.pem\n\n\
         next steps:\n\
         1. first key: start geobridge with\n\
         \x20  JITSI_RSA_JWT_KEY_FILE={path} GEOBRIDGE_JITSI_KEY_ID={kid} geobridge serve\n\
         \x20  rotation: add it to geobridge.toml as a published key and send SIGHUP:\n\
         \x20    [[jitsi.keys]]\n\
         \x20    kid = \"{kid}\"\n\
         \x20    file = \"{path}\"\n\
         \x20  then move `signing = true` to it and send SIGHUP again; drop the old key once\n\
         \x20  jitsi.token_lifetime_seconds have passed (see README.md, \"Rotating keys\")\n\
         2. print the lines for Prosody's config: geobridge prosody-config\n\
         3. check that Prosody can fetch the key:\n\
         \x20  curl http://<geobridge host>:<port>/asap/{hash}.pem",
        key.public_pem(),
    ))
}

/// How tokens are made.
pub enum Signer {
    /// RS256: the keyring's signing key signs, every key of it is published.
    Rs256(Keyring),
    /// HS256 with Prosody's `app_secret`.
    Hs256(Box<hmac::Key>),
    /// No token: a public Jitsi.
    None,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Rs256(keys) => write!(f, "Rs256({keys:?})"),
            Signer::Hs256(_) => f.write_str("Hs256(<secret>)"),
            Signer::None => f.write_str("None"),
        }
    }
}

/// Signing failed inside the crypto library.
#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

/// A signed token and what a caller reports about it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The JWS compact string.
    pub token: String,
    /// The kid that signed it (RS256 only).
    pub kid: Option<KeyId>,
    /// `exp`, seconds since 1970.
    pub expires_at: u64,
}

impl Signer {
    /// A signer for HS256 with this shared secret.
    pub fn hs256(secret: &[u8]) -> Signer {
        Signer::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The key id new tokens carry, when there is one.
    pub fn kid(&self) -> Option<&KeyId> {
        match self {
            Signer::Rs256(keys) => Some(keys.signing().kid()),
            _ => None,
        }
    }

    /// The keyring, in RS256 mode.
    pub fn keyring(&self) -> Option<&Keyring> {
        match self {
            Signer::Rs256(keys) => Some(keys),
            _ => None,
        }
    }

    /// The published public key whose id hashes to `hash`, as PEM.
    pub fn public_pem(&self, hash: &str) -> Option<&str> {
        self.keyring().and_then(|keys| keys.public_pem(hash))
    }

    /// Signs the claims `profile` and `grant` make at time `now`; `Ok(None)` in no-token mode.
    pub fn issue(
        &self,
        profile: &Profile,
        grant: &Grant<'_>,
        now: u64,
    ) -> Result<Option<Issued>, SignError> {
        let claims = Claims::new(profile, grant, now);
        let Some(token) = self.sign(&claims)? else {
            return Ok(None);
        };
        Ok(Some(Issued {
            token,
            kid: self.kid().cloned(),
            expires_at: claims.exp,
        }))
    }

    /// Signs `claims`; `Ok(None)` in no-token mode.
    pub fn sign(&self, claims: &Claims<'_>) -> Result<Option<String>, SignError> {
        let header = match self {
            Signer::Rs256(keys) => serde_json::json!(
                {"alg": "RS256", "typ": "JWT", "kid": keys.signing().kid().as_str()}
            ),
            Signer::Hs256(_) => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            Signer::None => return Ok(None),
        };
        let header = serde_json::to_vec(&header).map_err(|_| SignError)?;
        let payload = serde_json::to_vec(claims).map_err(|_| SignError)?;
        let mut jws = URL_SAFE_NO_PAD.encode(header);
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = match self {
            Signer::Rs256(keys) => keys.signing().sign(jws.as_bytes())?,
            Signer::Hs256(secret) => hmac::sign(secret, jws.as_bytes()).as_ref().to_vec(),
            Signer::None => return Ok(None),
        };
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(Some(jws))
    }
}

/// What every token of one Jitsi deployment (or shard) says besides the user and room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `iss`: Prosody's `app_id`, exact and case-sensitive.
    pub issuer: String,
    /// `aud`; `jitsi` by convention.
    pub audience: String,
    /// `sub`: the XMPP domain, or `*`.
    pub subject: String,
    /// Time from issue to `exp`.
    pub lifetime_seconds: u64,
    /// How far `nbf` is backdated; Prosody allows no clock skew.
    pub nbf_margin_seconds: u64,
    /// `context.features`, such as `recording = false`; left out when empty.
    pub features: BTreeMap<String, bool>,
}

/// Whether the token's user runs the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The room's host: a moderator, affiliation `owner`.
    Host,
    /// Anyone else: not a moderator, affiliation `member`.
    Guest,
}

/// Who may join which room, and the region chosen for them.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The user.
    pub user: &'a User,
    /// Host or guest.
    pub role: Role,
    /// The room, exactly as the client joins it.
    pub room: &'a str,
    /// The region geobridge chose for this user.
    pub region: &'a str,
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

impl<'a> Claims<'a> {
    /// The claims for `grant` under `profile`, issued at `now` (seconds since 1970).
    pub fn new(profile: &'a Profile, grant: &Grant<'a>, now: u64) -> Claims<'a> {
        let host = grant.role == Role::Host;
        Claims {
            iss: &profile.issuer,
            aud: &profile.audience,
            sub: &profile.subject,
            room: grant.room,
            exp: now + profile.lifetime_seconds,
            nbf: now.saturating_sub(profile.nbf_margin_seconds),
            iat: now,
            context: Context {
                user: TokenUser {
                    user: grant.user,
                    moderator: host,
                    affiliation: if host { "owner" } else { "member" },
                },
                features: &profile.features,
                region: grant.region,
            },
        }
    }
}

/// The `context` claim.
#[derive(Debug, Clone, Serialize)]
pub struct Context<'a> {
    /// The user, as Jitsi shows them, with their standing in the room.
    pub user: TokenUser<'a>,
    /// Jitsi features the user may use.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub features: &'a BTreeMap<String, bool>,
    /// The region geobridge chose.
    pub region: &'a str,
}

/// `context.user`: the lobby's user details plus Jitsi's moderator fields.
#[derive(Debug, Clone, Serialize)]
pub struct TokenUser<'a> {
    /// Id, name, e-mail, avatar.
    #[serde(flatten)]
    pub user: &'a User,
    /// True for the host: Jitsi's token plugins make the user a moderator.
    pub moderator: bool,
    /// `owner` for the host, `member` otherwise.
    pub affiliation: &'static str,
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

    fn profile() -> Profile {
        Profile {
            issuer: "CodeWithMe".to_owned(),
            audience: "jitsi".to_owned(),
            subject: "*".to_owned(),
            lifetime_seconds: 600,
            nbf_margin_seconds: 30,
            features: BTreeMap::from([("recording".to_owned(), false)]),
        }
    }

    fn payload(token: &str) -> serde_json::Value {
        let middle = token.split('.').nth(1).expect("three segments");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(middle).expect("base64url")).expect("json")
    }

    /// A host is moderator and owner, a guest neither; the profile's claims and times are used.
    #[test]
    fn roles_and_profile_reach_the_claims() {
        let user = User {
            id: "u1".to_owned(),
            name: "Zoë 日本 🚀".to_owned(),
            email: None,
            avatar: None,
        };
        let signer = Signer::hs256(b"secret");
        let profile = profile();
        let grant = |role| Grant {
            user: &user,
            role,
            room: "r1",
            region: "eu-west",
        };
        let host = signer
            .issue(&profile, &grant(Role::Host), 1000)
            .expect("signs");
        let host = host.expect("a token");
        assert_eq!(host.expires_at, 1600);
        let claims = payload(&host.token);
        assert_eq!(claims["context"]["user"]["moderator"], true);
        assert_eq!(claims["context"]["user"]["affiliation"], "owner");
        assert_eq!(claims["context"]["user"]["name"], "Zoë 日本 🚀");
        assert_eq!(claims["context"]["features"]["recording"], false);
        assert_eq!(
            (claims["nbf"].as_u64(), claims["exp"].as_u64()),
            (Some(970), Some(1600))
        );
        let guest = signer
            .issue(&profile, &grant(Role::Guest), 1000)
            .expect("signs");
        let claims = payload(&guest.expect("a token").token);
        assert_eq!(claims["context"]["user"]["moderator"], false);
        assert_eq!(claims["context"]["user"]["affiliation"], "member");
        let no_features = Profile {
            features: BTreeMap::new(),
            ..profile
        };
        let plain = signer
            .issue(&no_features, &grant(Role::Guest), 1000)
            .expect("signs");
        assert!(
            payload(&plain.expect("a token").token)["context"]
                .get("features")
                .is_none()
        );
        assert!(
            Signer::None
                .issue(&no_features, &grant(Role::Host), 1)
                .expect("ok")
                .is_none()
        );
    }
}
