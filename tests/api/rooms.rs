//! Rooms and tokens, each token checked by the `openssl` command line and by PyJWT, not by
//! our code.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Options, run, spawn_app};
use crate::verify::{Expect, Key, openssl_verifies, parts, pyjwt, sha256_hex, verify_answer};

fn now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(since.expect("clock after 1970").as_secs()).expect("fits")
}

fn host_request(ip: &str) -> Value {
    json!({"user": {"id": "u-42", "name": "Zoë Ångström 日本", "email": "zoe@example.com"},
           "client_ip": ip})
}

/// Asserts the claims Prosody's token plugin checks, as DESIGN.md states them.
fn assert_prosody_claims(claims: &Value, room: &str, region: &str) {
    let t = now();
    assert_eq!(claims["iss"], "CodeWithMe");
    assert_eq!(claims["aud"], "jitsi");
    assert_eq!(claims["sub"], "*");
    assert_eq!(claims["room"], room);
    let (exp, nbf, iat) = (
        claims["exp"].as_i64(),
        claims["nbf"].as_i64(),
        claims["iat"].as_i64(),
    );
    let (exp, nbf, iat) = (
        exp.expect("exp number"),
        nbf.expect("nbf number"),
        iat.expect("iat"),
    );
    assert!(exp > t && exp <= t + 3600 + 5, "exp {exp} now {t}");
    assert!(nbf <= t, "nbf {nbf} after now {t}");
    assert_eq!(iat - nbf, 30, "nbf backdated by the margin");
    assert_eq!(exp - iat, 3600, "default lifetime");
    assert_eq!(claims["context"]["user"]["name"], "Zoë Ångström 日本");
    assert_eq!(claims["context"]["user"]["id"], "u-42");
    assert_eq!(
        claims["context"]["user"]["moderator"], true,
        "the host moderates"
    );
    assert_eq!(claims["context"]["user"]["affiliation"], "owner");
    assert_eq!(claims["context"]["region"], region);
}

/// A room for a UK user: eu-west, a valid link, and an RS256 token that openssl verifies
/// against the key geobridge publishes at the URL Prosody would fetch, and PyJWT verifies
/// against the JWKS document.
#[tokio::test]
async fn room_token_verifies_with_openssl() {
    let app = spawn_app(Options::default()).await;
    let answer = app.create_room(&host_request("81.2.69.142")).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let body = &answer.json;
    assert_eq!(body["region"], "eu-west");
    let room = body["room"].as_str().expect("room");
    assert!(
        room.len() >= 20
            && room
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    );
    let token = body["token"].as_str().expect("token");
    assert_eq!(
        body["link"],
        format!("https://meet.example.com/{room}?jwt={token}")
    );

    let (header, claims, input, signature) = parts(token);
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "CWMKey");
    assert_prosody_claims(&claims, room, "eu-west");
    assert_eq!(body["expires_at"], claims["exp"]);

    let key_path = "/asap/8791edb7d806447dd0aaa98a2b568ad792696ed4d885f23b89f6beb7f7c4f44e.pem";
    let key = app.get(key_path).await;
    assert_eq!(key.status, 200);
    assert!(
        key.text.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{}",
        key.text
    );
    assert!(openssl_verifies(
        app.dir.path(),
        &key.text,
        &input,
        &signature
    ));
    // The verifier can fail: a changed claim must not verify.
    let forged = input.replacen('.', ".e", 1);
    assert!(!openssl_verifies(
        app.dir.path(),
        &key.text,
        &forged,
        &signature
    ));

    let unknown = app.get(&format!("/asap/{}.pem", "0".repeat(64))).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json["error"]["code"], "unknown_key");

    let decoded = verify_answer(&app, body).await;
    assert_eq!(decoded["context"]["user"]["name"], "Zoë Ångström 日本");
    let jwks = app.get("/.well-known/jwks.json").await.json;
    let only = &jwks["keys"][0];
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (&only["kty"], &only["alg"], &only["use"], &only["kid"]),
        (
            &json!("RSA"),
            &json!("RS256"),
            &json!("sig"),
            &json!("CWMKey")
        )
    );
    assert_eq!(only["e"], "AQAB");
    // PyJWT can fail too: a token for another room, or with a changed claim, is rejected.
    let other_room = pyjwt(
        app.dir.path(),
        Key::Jwks(&jwks.to_string()),
        &Expect::room("x"),
        token,
    );
    assert!(other_room.expect_err("wrong room").contains("room"));
    let (head, rest) = token.split_once('.').expect("segments");
    let tampered = format!("{head}.e{rest}");
    let expect = Expect::room(room);
    assert!(
        pyjwt(
            app.dir.path(),
            Key::Jwks(&jwks.to_string()),
            &expect,
            &tampered
        )
        .is_err()
    );
}

/// Every claim follows the settings: issuer, audience, subject, lifetime, nbf margin and
/// features; PyJWT accepts the token with those values and openssl verifies it.
#[tokio::test]
async fn claims_follow_the_settings() {
    let options = Options {
        extra_toml: "\n[jitsi.features]\nrecording = false\nlivestreaming = true\n".to_owned(),
        ..Options::default()
    }
    .env("GEOBRIDGE_JITSI_ISSUER", "Lobby-Prod")
    .env("GEOBRIDGE_JITSI_AUDIENCE", "meet")
    .env("GEOBRIDGE_JITSI_SUBJECT", "meet.jitsi")
    .env("GEOBRIDGE_TOKEN_LIFETIME_SECONDS", "600")
    .env("GEOBRIDGE_NBF_MARGIN_SECONDS", "90");
    let app = spawn_app(options).await;
    let answer = app.create_room(&host_request("81.2.69.142")).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let (token, room) = (answer.json["token"].as_str(), answer.json["room"].as_str());
    let (token, room) = (token.expect("token"), room.expect("room"));
    let jwks = app.get("/.well-known/jwks.json").await.text;
    let expect = Expect {
        iss: "Lobby-Prod",
        aud: "meet",
        room,
    };
    let claims = pyjwt(app.dir.path(), Key::Jwks(&jwks), &expect, token).expect("PyJWT accepts");
    assert_eq!(claims["sub"], "meet.jitsi");
    let (iat, exp, nbf) = (&claims["iat"], &claims["exp"], &claims["nbf"]);
    let (iat, exp, nbf) = (iat.as_i64(), exp.as_i64(), nbf.as_i64());
    let iat = iat.expect("iat");
    assert_eq!((exp, nbf), (Some(iat + 600), Some(iat - 90)));
    assert_eq!(
        claims["context"]["features"],
        json!({"livestreaming": true, "recording": false})
    );
    let wrong_issuer = pyjwt(app.dir.path(), Key::Jwks(&jwks), &Expect::room(room), token);
    assert!(
        wrong_issuer
            .expect_err("iss must be exact")
            .contains("Issuer")
    );
    verify_rs256_openssl_only(&app, token).await;
}

/// The openssl half of `verify_rs256`, for tokens whose claims differ from the defaults.
async fn verify_rs256_openssl_only(app: &crate::helpers::App, token: &str) {
    let (header, _, input, signature) = parts(token);
    let kid = header["kid"].as_str().expect("kid");
    let key = app.get(&format!("/asap/{}.pem", sha256_hex(kid))).await;
    assert!(openssl_verifies(
        app.dir.path(),
        &key.text,
        &input,
        &signature
    ));
}

/// Room names differ between calls.
#[tokio::test]
async fn rooms_are_unique() {
    let app = spawn_app(Options::default()).await;
    let a = app.create_room(&host_request("8.8.8.8")).await;
    let b = app.create_room(&host_request("8.8.8.8")).await;
    assert_ne!(a.json["room"], b.json["room"]);
    assert_eq!(a.json["region"], "us-west");
}

/// A key file the operator made with openssl (PKCS#1 and PKCS#8) signs tokens that verify
/// against the published key.
#[tokio::test]
async fn operator_key_files_in_both_forms() {
    let pkcs8 = [
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
    ];
    let pkcs1 = ["genrsa", "-traditional", "-out"];
    for (form, args, tail) in [
        ("pkcs8", &pkcs8[..], None),
        ("pkcs1", &pkcs1[..], Some("2048")),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("key.pem");
        let (ok, _, err) = run(Command::new("openssl").args(args).arg(&key).args(tail));
        assert!(ok, "openssl {form}: {err}");
        let options = Options::default()
            .env("JITSI_RSA_JWT_KEY_FILE", key.to_str().expect("utf-8"))
            .env("GEOBRIDGE_JITSI_KEY_ID", "ops-2026");
        let app = spawn_app(options).await;
        let answer = app.create_room(&host_request("1.1.1.1")).await;
        let (header, _, input, signature) = parts(answer.json["token"].as_str().expect("token"));
        assert_eq!(header["kid"], "ops-2026");
        // The published key is the one derived by openssl from the operator's file.
        let (ok, expected, _) = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key));
        assert!(ok);
        let hash = sha256_hex("ops-2026");
        let published = app.get(&format!("/asap/{hash}.pem")).await;
        assert_eq!(published.text.trim(), expected.trim(), "{form}");
        assert!(
            openssl_verifies(dir.path(), &published.text, &input, &signature),
            "{form}"
        );
        verify_answer(&app, &answer.json).await;
    }
}

/// HS256 tokens verify with openssl's HMAC and with PyJWT against the shared secret.
#[tokio::test]
async fn hs256_token_verifies() {
    let secret = "prosody-app-secret-for-tests-0123";
    let options = Options::default()
        .env("GEOBRIDGE_JITSI_AUTH", "hs256")
        .env("GEOBRIDGE_JITSI_APP_SECRET", secret);
    let app = spawn_app(options).await;
    let answer = app.create_room(&host_request("81.2.69.142")).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let token = answer.json["token"].as_str().expect("token");
    let (header, claims, input, signature) = parts(token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert_prosody_claims(
        &claims,
        answer.json["room"].as_str().expect("room"),
        "eu-west",
    );
    let data = app.dir.path().join("data");
    std::fs::write(&data, &input).expect("write");
    let mac = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-mac", "HMAC", "-macopt"])
        .arg(format!("key:{secret}"))
        .arg(&data)
        .output()
        .expect("openssl runs");
    assert!(mac.status.success());
    assert_eq!(mac.stdout, signature);
    let room = answer.json["room"].as_str().expect("room");
    let decoded = pyjwt(
        app.dir.path(),
        Key::Secret(secret),
        &Expect::room(room),
        token,
    );
    assert_eq!(
        decoded.expect("PyJWT accepts")["context"]["region"],
        "eu-west"
    );
    let wrong = pyjwt(
        app.dir.path(),
        Key::Secret("another-secret"),
        &Expect::room(room),
        token,
    );
    assert!(wrong.expect_err("wrong secret").contains("Signature"));
    // No RSA key exists in HS256 mode, so nothing is published.
    assert_eq!(app.get("/.well-known/jwks.json").await.status, 404);
    assert!(
        !app.log.lock().expect("log").contains(secret),
        "secret logged"
    );
}

/// No-token mode gives a plain link and warns at start-up.
#[tokio::test]
async fn no_token_mode() {
    let app = spawn_app(Options::default().env("GEOBRIDGE_JITSI_AUTH", "none")).await;
    let answer = app.create_room(&host_request("8.8.8.8")).await;
    assert_eq!(answer.status, 201);
    assert!(answer.json["token"].is_null());
    let room = answer.json["room"].as_str().expect("room");
    assert_eq!(
        answer.json["link"],
        format!("https://meet.example.com/{room}")
    );
    assert!(
        app.log
            .lock()
            .expect("log")
            .contains("links carry no token")
    );
    let key = "/asap/8791edb7d806447dd0aaa98a2b568ad792696ed4d885f23b89f6beb7f7c4f44e.pem";
    assert_eq!(app.get(key).await.status, 404);
    assert_eq!(app.get("/.well-known/jwks.json").await.status, 404);
}

/// With no key configured, serve generates a 4096-bit key once and keeps using it.
#[tokio::test]
async fn generated_key_is_kept() {
    let app = spawn_app(Options::default()).await;
    let key_file = app.dir.path().join("state/jitsi-rsa.pem");
    let (ok, text, _) = run(Command::new("openssl")
        .args(["rsa", "-noout", "-text", "-in"])
        .arg(&key_file));
    assert!(ok && text.contains("4096 bit"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let path = "/asap/8791edb7d806447dd0aaa98a2b568ad792696ed4d885f23b89f6beb7f7c4f44e.pem";
    let first = app.get(path).await.text;
    let restarted = crate::helpers::spawn_app(Options::default().env(
        "GEOBRIDGE_STATE_DIR",
        app.dir.path().join("state").to_str().expect("utf-8"),
    ))
    .await;
    assert_eq!(restarted.get(path).await.text, first);
}

/// On a shard with its own app id and XMPP domain, the host's and a guest's tokens carry the
/// shard's `iss` and `sub`; PyJWT (JWKS) and openssl (key URL) accept both; the host is a
/// moderator and owner, the guest neither; the guest's link joins the same room.
#[tokio::test]
async fn shard_claims_and_roles_over_http() {
    let shard = "\n[[shards]]\nid = \"meet-eu\"\nurl = \"https://meet-eu.example.com\"\n\
                 subject = \"meet-eu.example.com\"\nissuer = \"CodeWithMe-EU\"\n";
    let config = crate::helpers::example_config().replace(
        "group = \"europe\"",
        "group = \"europe\"\nshard = \"meet-eu\"",
    ) + shard;
    let app = spawn_app(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let host = app.create_room(&host_request("81.2.69.142")).await;
    assert_eq!(host.status, 201, "{}", host.text);
    let room = host.json["room"].as_str().expect("room").to_owned();
    let guest = json!({"user": {"id": "g-1", "name": "Gäst ゲスト"}, "client_ip": "81.2.69.142"});
    let url = format!("{}/v1/rooms/{room}/participants", app.base);
    let guest = app.send(app.http.post(url).json(&guest)).await;
    assert_eq!(guest.status, 201, "{}", guest.text);
    let jwks = app.get("/.well-known/jwks.json").await.text;
    let expect = Expect {
        iss: "CodeWithMe-EU",
        aud: "jitsi",
        room: &room,
    };
    let mut seen = Vec::new();
    for answer in [&host.json, &guest.json] {
        let link = answer["link"].as_str().expect("link");
        assert!(link.starts_with(&format!("https://meet-eu.example.com/{room}?jwt=")));
        let token = answer["token"].as_str().expect("token");
        let claims = pyjwt(app.dir.path(), Key::Jwks(&jwks), &expect, token)
            .unwrap_or_else(|why| panic!("PyJWT rejects: {why}"));
        assert_eq!(claims["sub"], "meet-eu.example.com");
        verify_rs256_openssl_only(&app, token).await;
        let user = &claims["context"]["user"];
        seen.push((user["moderator"].clone(), user["affiliation"].clone()));
    }
    assert_eq!(
        seen,
        [
            (json!(true), json!("owner")),
            (json!(false), json!("member"))
        ]
    );
}
