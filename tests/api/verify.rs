//! Token checks by code that is not geobridge's: the `openssl` command line against a PEM
//! from the key URL, and Python's PyJWT (`tests/jwt/verify.py`) against the JWKS document.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{App, b64url, repo_path, run};

/// Splits a token into (header, claims, signing input, signature).
pub fn parts(token: &str) -> (Value, Value, String, Vec<u8>) {
    let pieces: Vec<&str> = token.split('.').collect();
    assert_eq!(pieces.len(), 3, "three segments: {token}");
    let header = serde_json::from_slice(&b64url(pieces[0])).expect("header JSON");
    let claims = serde_json::from_slice(&b64url(pieces[1])).expect("claims JSON");
    (
        header,
        claims,
        format!("{}.{}", pieces[0], pieces[1]),
        b64url(pieces[2]),
    )
}

/// Verifies an RS256 signature with `openssl dgst`.
pub fn openssl_verifies(dir: &Path, pem: &str, input: &str, signature: &[u8]) -> bool {
    let (key, data, sig) = (dir.join("pub.pem"), dir.join("data"), dir.join("sig"));
    std::fs::write(&key, pem).expect("write key");
    std::fs::write(&data, input).expect("write data");
    std::fs::write(&sig, signature).expect("write sig");
    let (ok, out, _) = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&key)
        .arg("-signature")
        .arg(&sig)
        .arg(&data));
    ok && out.contains("Verified OK")
}

/// Lower-case hex SHA-256 of `text`, computed by openssl.
pub fn sha256_hex(text: &str) -> String {
    let (ok, out, _) = run(Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{text}' | openssl dgst -sha256 -r")));
    assert!(ok);
    out.split_whitespace().next().expect("digest").to_owned()
}

/// What PyJWT needs besides the token.
pub enum Key<'a> {
    /// A JWKS document, as served.
    Jwks(&'a str),
    /// The HS256 shared secret.
    Secret(&'a str),
}

/// The claims a verifier insists on.
pub struct Expect<'a> {
    /// Exact `iss`.
    pub iss: &'a str,
    /// Accepted `aud`.
    pub aud: &'a str,
    /// Exact `room`: the link's path segment.
    pub room: &'a str,
}

impl<'a> Expect<'a> {
    /// The defaults of DESIGN.md (`CodeWithMe`, `jitsi`) and this room.
    pub fn room(room: &'a str) -> Expect<'a> {
        Expect {
            iss: "CodeWithMe",
            aud: "jitsi",
            room,
        }
    }
}

/// Runs PyJWT on `token`: `Ok(claims)` when it accepts it under Prosody's rules with the
/// expected claims, `Err(reason)` when it does not.
pub fn pyjwt(dir: &Path, key: Key<'_>, expect: &Expect<'_>, token: &str) -> Result<Value, String> {
    let mut command = Command::new("python3");
    command.arg(repo_path("tests/jwt/verify.py"));
    match key {
        Key::Jwks(document) => {
            let file = dir.join("jwks.json");
            std::fs::write(&file, document).expect("write jwks");
            command.arg("--jwks").arg(file);
        }
        Key::Secret(secret) => {
            command.args(["--secret", secret]);
        }
    }
    command.args([
        "--iss",
        expect.iss,
        "--aud",
        expect.aud,
        "--room",
        expect.room,
        token,
    ]);
    let (ok, out, err) = run(&mut command);
    if ok {
        Ok(serde_json::from_str(&out).expect("claims JSON from verify.py"))
    } else {
        Err(err)
    }
}

/// The room a link joins: its last path segment, the part Prosody compares with `room`.
pub fn room_of_link(link: &str) -> &str {
    let path = link.split(['?', '#']).next().unwrap_or(link);
    path.rsplit('/').next().unwrap_or(path)
}

/// Verifies the token of a `POST /v1/rooms` answer both ways (see `verify_rs256`), with the
/// room taken from the link's path, and checks that the link carries that very token.
pub async fn verify_answer(app: &App, answer: &Value) -> Value {
    let (link, token) = (answer["link"].as_str(), answer["token"].as_str());
    let (link, token) = (link.expect("link"), token.expect("token"));
    assert!(link.ends_with(&format!("?jwt={token}")), "{link}");
    verify_rs256(app, token, room_of_link(link)).await
}

/// Verifies an RS256 token both ways: openssl with the PEM at the token kid's key URL, and
/// PyJWT with the JWKS document. Returns the claims PyJWT decoded.
pub async fn verify_rs256(app: &App, token: &str, room: &str) -> Value {
    let (header, _, input, signature) = parts(token);
    let kid = header["kid"].as_str().expect("kid in the header");
    let key = app.get(&format!("/asap/{}.pem", sha256_hex(kid))).await;
    assert_eq!(key.status, 200, "key of kid {kid}: {}", key.text);
    assert!(
        openssl_verifies(app.dir.path(), &key.text, &input, &signature),
        "openssl rejects the token of kid {kid}"
    );
    let jwks = app.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    pyjwt(
        app.dir.path(),
        Key::Jwks(&jwks.text),
        &Expect::room(room),
        token,
    )
    .unwrap_or_else(|why| panic!("PyJWT rejects the token of kid {kid}: {why}"))
}
