//! Signing keys: bad key files, several keys under their own kids, and rotation by SIGHUP
//! while requests keep flowing. Keys are made with the `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{App, Options, command, example_config, repo_path, run, spawn_app};
use crate::verify::{Expect, Key, openssl_verifies, parts, pyjwt, sha256_hex};
use crate::verify::{room_of_link, verify_rs256};

/// Writes a new unencrypted PKCS#8 RSA key made by openssl.
fn openssl_key(dir: &Path, name: &str, bits: u32) -> PathBuf {
    let path = dir.join(name);
    let (ok, _, err) = run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .arg("-out")
        .arg(&path));
    assert!(ok, "openssl genpkey: {err}");
    path
}

/// Runs `openssl` with `args`, asserting it succeeds.
fn openssl(args: &[&str]) {
    let (ok, _, err) = run(Command::new("openssl").args(args));
    assert!(ok, "openssl {args:?}: {err}");
}

/// `[[jitsi.keys]]` entries for (kid, file, signing).
fn keys_toml(keys: &[(&str, &Path, bool)]) -> String {
    keys.iter()
        .map(|(kid, file, signing)| {
            format!(
                "\n[[jitsi.keys]]\nkid = \"{kid}\"\nfile = \"{}\"\nsigning = {signing}\n",
                file.display()
            )
        })
        .collect()
}

/// Starts `geobridge serve` and expects it to refuse before binding: (exit code, stderr).
fn refused_start(env: &[(&str, &str)], config: Option<&Path>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let mut serve = command();
    if let Some(config) = config {
        serve.arg("--config").arg(config);
    }
    serve
        .arg("serve")
        .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
        .env("GEOBRIDGE_STATE_DIR", dir.path().join("state"))
        .env(
            "GEOBRIDGE_GEO_DATABASE",
            repo_path("data/geobridge-city.mmdb"),
        )
        .envs(env.iter().copied());
    let out = serve.output().expect("geobridge runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("listening on"), "{stderr}");
    (out.status.code(), stderr)
}

/// Each kind of unusable key file stops start-up with exit 64 and a message that names the
/// file and says what is wrong: encrypted (PKCS#8 and PKCS#1), malformed, not PEM, a public
/// key (SPKI and PKCS#1), a 1024-bit key, a missing file.
#[test]
fn bad_key_files_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let d = |name: &str| dir.path().join(name).display().to_string();
    let good = openssl_key(dir.path(), "good.pem", 2048);
    let good = good.to_str().expect("utf-8");
    openssl(&[
        "pkey",
        "-in",
        good,
        "-aes-256-cbc",
        "-passout",
        "pass:pw",
        "-out",
        &d("enc8.pem"),
    ]);
    openssl(&[
        "rsa",
        "-in",
        good,
        "-traditional",
        "-aes256",
        "-passout",
        "pass:pw",
        "-out",
        &d("enc1.pem"),
    ]);
    openssl(&["pkey", "-in", good, "-pubout", "-out", &d("spki.pem")]);
    openssl(&[
        "rsa",
        "-in",
        good,
        "-RSAPublicKey_out",
        "-out",
        &d("pkcs1pub.pem"),
    ]);
    openssl_key(dir.path(), "small.pem", 1024);
    let text = std::fs::read_to_string(good).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let cut = [&lines[..4], &lines[12..]].concat().join("\n");
    std::fs::write(d("cut.pem"), cut).expect("write");
    std::fs::write(d("notpem.pem"), "hello\n").expect("write");
    for (file, says) in [
        ("enc8.pem", "encrypted with a passphrase"),
        ("enc1.pem", "encrypted with a passphrase"),
        ("cut.pem", "not a valid RSA private key"),
        ("notpem.pem", "no PEM block"),
        ("spki.pem", "this is a public key"),
        ("pkcs1pub.pem", "this is a public key"),
        ("small.pem", "too small; use at least 2048 bits"),
        ("missing.pem", "No such file"),
    ] {
        let path = d(file);
        let (code, stderr) = refused_start(&[("JITSI_RSA_JWT_KEY_FILE", &path)], None);
        assert_eq!(code, Some(64), "{file}: {stderr}");
        assert!(
            stderr.contains(&format!("key file '{path}': ")) && stderr.contains(says),
            "{file} should be named with {says:?}:\n{stderr}"
        );
    }
}

/// A key file that other users may read is a warning naming the file; a 0600 one is not.
#[tokio::test]
async fn readable_key_file_is_a_warning() {
    let dir = tempfile::tempdir().expect("dir");
    let key = openssl_key(dir.path(), "open.pem", 2048);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(&key, open).expect("chmod");
    }
    let path = key.to_str().expect("utf-8");
    let app = spawn_app(Options::default().env("JITSI_RSA_JWT_KEY_FILE", path)).await;
    let log = app.log.lock().expect("log").clone();
    assert!(
        log.contains("key file is readable by other users") && log.contains(path),
        "{log}"
    );
    let closed = spawn_app(Options::default()).await;
    let log = closed.log.lock().expect("log").clone();
    assert!(!log.contains("readable by other users"), "{log}");
}

/// One kid with two different keys is refused at start-up, saying why Prosody cannot take
/// it; so is a key list with two signing keys.
#[test]
fn one_kid_two_keys_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (
        openssl_key(dir.path(), "a.pem", 2048),
        openssl_key(dir.path(), "b.pem", 2048),
    );
    let config = dir.path().join("geobridge.toml");
    let keys = keys_toml(&[("k", &a, true), ("k", &b, false)]);
    std::fs::write(&config, example_config() + &keys).expect("write");
    let (code, stderr) = refused_start(&[], Some(&config));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("key id 'k': two different keys"),
        "{stderr}"
    );
    assert!(stderr.contains("Prosody caches the public key of a kid forever"));

    let keys = keys_toml(&[("k1", &a, true), ("k2", &b, true)]);
    std::fs::write(&config, example_config() + &keys).expect("write");
    let (code, stderr) = refused_start(&[], Some(&config));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("exactly one key needs signing = true; found 2"),
        "{stderr}"
    );
}

/// Counts of what the request loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    kids: std::sync::Mutex<Vec<String>>,
}

/// Creates rooms and fetches `key_path` until `stop`, counting every answer that is not a
/// success (or whose token has no kid) as a failure.
async fn request_loop(base: String, key_path: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let http = reqwest::Client::new();
    let body = json!({"user": {"id": "u", "name": "Load"}, "client_ip": "81.2.69.142"});
    while !stop.load(Ordering::Relaxed) {
        let room = http
            .post(format!("{base}/v1/rooms"))
            .json(&body)
            .send()
            .await;
        let token = match room {
            Ok(r) if r.status() == 201 => r.json::<Value>().await.ok(),
            _ => None,
        };
        let kid = token.and_then(|t| {
            let (header, ..) = parts(t["token"].as_str()?);
            header["kid"].as_str().map(str::to_owned)
        });
        let key = http.get(format!("{base}{key_path}")).send().await;
        let key_ok = key.is_ok_and(|k| k.status() == 200);
        match kid {
            Some(kid) if key_ok => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                let mut kids = tally.kids.lock().expect("kids");
                if !kids.contains(&kid) {
                    kids.push(kid);
                }
            }
            _ => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A fresh room's (token, room), the room taken from the link's path.
async fn new_token(app: &App) -> (String, String) {
    let body = json!({"user": {"id": "u", "name": "Ana"}, "client_ip": "81.2.69.142"});
    let answer = app.create_room(&body).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let token = answer.json["token"].as_str().expect("token").to_owned();
    let room = room_of_link(answer.json["link"].as_str().expect("link")).to_owned();
    assert_eq!(answer.json["room"], room);
    (token, room)
}

fn kid_of(token: &str) -> String {
    parts(token).0["kid"].as_str().expect("kid").to_owned()
}

/// Rewrites the config with `keys` and sends SIGHUP.
fn reconfigure(app: &App, keys: &[(&str, &Path, bool)]) {
    std::fs::write(app.config_path(), example_config() + &keys_toml(keys)).expect("write");
    app.hangup();
}

/// The value of `geobridge_key_reloads_total{outcome=...}`.
async fn reloads(app: &App, outcome: &str) -> u64 {
    let text = app.get("/metrics").await.text;
    let series = format!("geobridge_key_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Rotation on SIGHUP: a new key is published, then signs, then the old one is retired.
/// Tokens of the old key verify through its key URL (openssl) and the JWKS (PyJWT) for as
/// long as it is published; new tokens carry the new kid; a bad key file or a kid given
/// another key is refused, counted and logged, and the keys in service stay. A request loop
/// runs through every reload and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_on_sighup_drops_nothing() {
    let keys = tempfile::tempdir().expect("dir");
    let a = openssl_key(keys.path(), "a.pem", 2048);
    let b = openssl_key(keys.path(), "b.pem", 2048);
    let c = openssl_key(keys.path(), "c.pem", 2048);
    let options = Options {
        extra_toml: keys_toml(&[("k1", &a, true)]),
        ..Options::default()
    };
    let app = spawn_app(options).await;
    let (old_token, old_room) = new_token(&app).await;
    assert_eq!(kid_of(&old_token), "k1");
    verify_rs256(&app, &old_token, &old_room).await;

    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let k1_path = format!("/asap/{}.pem", sha256_hex("k1"));
    let load = tokio::spawn(request_loop(
        app.base.clone(),
        k1_path.clone(),
        stop.clone(),
        tally.clone(),
    ));

    // 1. Publish k2 next to k1; k1 still signs.
    reconfigure(&app, &[("k1", &a, true), ("k2", &b, false)]);
    app.wait_until(60, "k2 published", || async {
        app.get(&format!("/asap/{}.pem", sha256_hex("k2")))
            .await
            .status
            == 200
    })
    .await;
    assert_eq!(kid_of(&new_token(&app).await.0), "k1");
    for _ in 0..3 {
        app.hangup();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. k2 signs; k1 stays published for the tokens it signed.
    reconfigure(&app, &[("k1", &a, false), ("k2", &b, true)]);
    app.wait_until(60, "k2 signing", || async {
        kid_of(&new_token(&app).await.0) == "k2"
    })
    .await;
    let (new_token_text, new_room) = new_token(&app).await;
    verify_rs256(&app, &new_token_text, &new_room).await;
    verify_rs256(&app, &old_token, &old_room).await;

    // 3. A bad key file, then k2 given another key: both refused, nothing changes.
    let garbage = keys.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").expect("write");
    let failed_before = reloads(&app, "rejected").await;
    reconfigure(
        &app,
        &[("k1", &a, false), ("k2", &b, true), ("k3", &garbage, false)],
    );
    app.wait_until(60, "a failed reload counted", || async {
        reloads(&app, "rejected").await == failed_before + 1
    })
    .await;
    reconfigure(&app, &[("k1", &a, false), ("k2", &c, true)]);
    app.wait_until(60, "a second failed reload counted", || async {
        reloads(&app, "rejected").await == failed_before + 2
    })
    .await;
    let log = app.log.lock().expect("log").clone();
    assert!(
        log.contains("keys not reloaded") && log.contains("garbage.pem"),
        "{log}"
    );
    assert!(log.contains("key id 'k2' is published with another key already"));
    let (after, after_room) = new_token(&app).await;
    assert_eq!(kid_of(&after), "k2");
    verify_rs256(&app, &after, &after_room).await;
    verify_rs256(&app, &old_token, &old_room).await;

    stop.store(true, Ordering::Relaxed);
    load.await.expect("request loop");
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during reloads",
        ok + failed
    );
    assert!(ok > 0, "the request loop ran");
    let seen = tally.kids.lock().expect("kids").clone();
    eprintln!("request loop: {ok} rooms and key fetches, {failed} failed, kids {seen:?}");
    assert!(seen.iter().all(|k| k == "k1" || k == "k2"), "{seen:?}");
    // Signals sent in quick succession may be taken as one, so only the two awaited count.
    assert!(
        reloads(&app, "loaded").await >= 2,
        "{}",
        app.get("/metrics").await.text
    );

    // 4. Once k1's tokens have expired, k1 is retired: its key URL answers 404.
    reconfigure(&app, &[("k2", &b, true)]);
    app.wait_until(60, "k1 retired", || async {
        app.get(&k1_path).await.status == 404
    })
    .await;
    let jwks = app.get("/.well-known/jwks.json").await.json;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(jwks["keys"][0]["kid"], "k2");
    verify_rs256(&app, &after, &after_room).await;
}

/// A guest's token (the library's signing call with the guest role) verifies with openssl
/// against the public key openssl derives from the key file, and with PyJWT against the
/// JWKS; it does not make the guest a moderator.
#[test]
fn guest_tokens_verify_and_do_not_moderate() {
    use geobridge::room::User;
    use geobridge::token::{Grant, KeyId, KeySource, Keyring, Role, Signer};
    let dir = tempfile::tempdir().expect("dir");
    let file = openssl_key(dir.path(), "k.pem", 2048);
    let source = KeySource {
        kid: KeyId::parse("CWMKey").expect("valid"),
        file: file.clone(),
        signing: true,
    };
    let keys = Keyring::load(&[source]).expect("loads");
    let jwks = keys.jwks().to_string();
    let signer = Signer::Rs256(keys);
    let settings = geobridge::config::Settings::load(None, &Default::default()).expect("ok");
    let user = User {
        id: "g-7".to_owned(),
        name: "Gäst ゲスト".to_owned(),
        email: None,
        avatar: None,
    };
    let grant = Grant {
        user: &user,
        role: Role::Guest,
        room: "abc123",
        region: "us-east",
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now = now.expect("after 1970").as_secs();
    let issued = signer.issue(&settings.jitsi.token_profile(), &grant, now);
    let token = issued.expect("signs").expect("a token").token;
    let claims = pyjwt(
        dir.path(),
        Key::Jwks(&jwks),
        &Expect::room("abc123"),
        &token,
    )
    .unwrap_or_else(|why| panic!("PyJWT rejects the guest token: {why}"));
    assert_eq!(claims["context"]["user"]["moderator"], false);
    assert_eq!(claims["context"]["user"]["affiliation"], "member");
    assert_eq!(claims["context"]["user"]["name"], "Gäst ゲスト");
    assert_eq!(claims["context"]["region"], "us-east");
    let (ok, public, _) = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&file));
    assert!(ok);
    let (_, _, input, signature) = parts(&token);
    assert!(openssl_verifies(dir.path(), &public, &input, &signature));
}
