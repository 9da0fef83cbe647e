//! Logs under load with secrets in play: no key, token, credential or (at info) client
//! address may appear in them, in text or JSON format.

use serde_json::{Value, json};

use crate::helpers::{App, FakeBridge, Options, run, spawn_app};
use crate::observability::{user, wait_ready};

const LOBBY: &str = "lobby-credential-7f3a9c2e51d4b8a6";
const ADMIN: &str = "admin-credential-c81e4f0a9d2b7365";
const WRONG: &str = "guessed-credential-5b2d8e1f0c7a9436";
const APP_SECRET: &str = "hs256-app-secret-0e9d7c5b3a1f2468";

/// Under concurrent load with an RS256 key file, lobby and admin credentials, a wrong
/// credential and every route, a debug-level log holds no credential, no part of the private
/// key and no issued token or token signature.
#[tokio::test]
async fn debug_log_under_load_holds_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("jitsi-rsa.pem");
    let (ok, _, err) = run(crate::helpers::command()
        .args(["keygen", "--bits", "2048", "--out"])
        .arg(&key));
    assert!(ok, "{err}");
    let pem = std::fs::read_to_string(&key).expect("key");
    let bridge = FakeBridge::start().await;
    let options = credentials()
        .env("JITSI_RSA_JWT_KEY_FILE", key.to_str().expect("utf-8 path"))
        .env("RUST_LOG", "debug")
        .bridge("lon-1", "eu-west", &bridge.url);
    let app = spawn_app(options).await;
    let tokens = load(&app).await;
    app.hangup();
    let mut secrets = vec![LOBBY.to_owned(), ADMIN.to_owned(), WRONG.to_owned()];
    secrets.extend(pem_lines(&pem));
    secrets.extend(token_parts(&tokens));
    let log = settle_log(&app).await;
    assert!(
        log.contains("request"),
        "the log has the per-request debug lines:\n{log}"
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "secret {secret} in the log:\n{log}"
        );
    }
}

/// Under load with an HS256 secret, the JSON log at info is one JSON object per line and
/// holds no secret, credential, token, or client address.
#[tokio::test]
async fn json_info_log_under_load_holds_no_secret_or_address() {
    let bridge = FakeBridge::start().await;
    let options = credentials()
        .env("GEOBRIDGE_JITSI_AUTH", "hs256")
        .env("GEOBRIDGE_JITSI_APP_SECRET", APP_SECRET)
        .env("GEOBRIDGE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .bridge("lon-1", "eu-west", &bridge.url);
    let app = spawn_app(options).await;
    let tokens = load(&app).await;
    app.hangup();
    let mut secrets = vec![
        LOBBY.to_owned(),
        ADMIN.to_owned(),
        WRONG.to_owned(),
        APP_SECRET.to_owned(),
    ];
    secrets.extend(token_parts(&tokens));
    secrets.extend(CLIENT_IPS.iter().map(|ip| ip.to_string()));
    let log = settle_log(&app).await;
    for line in log.lines() {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line}");
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{secret} in the log:\n{log}"
        );
    }
}

/// Addresses the load sends as `client_ip`; none is a test machine's own.
const CLIENT_IPS: [&str; 4] = ["81.2.69.142", "8.8.4.4", "203.0.113.77", "10.44.3.9"];

/// Options with lobby and admin credentials.
fn credentials() -> Options {
    Options::default()
        .env("GEOBRIDGE_LOBBY_CREDENTIALS", LOBBY)
        .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN)
}

/// Concurrent rooms, guests, selections, registry reads and writes, and refused
/// credentials; returns every token issued.
async fn load(app: &App) -> Vec<String> {
    wait_ready(app).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..48 {
        let (http, base) = (app.http.clone(), app.base.clone());
        tasks.spawn(async move { one_user(&http, &base, i).await });
    }
    let mut tokens = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        tokens.extend(joined.expect("task"));
    }
    assert!(tokens.len() >= 48, "tokens issued: {}", tokens.len());
    tokens
}

/// One user's requests: a room, a guest, a selection, a registry read, a refused request.
async fn one_user(http: &reqwest::Client, base: &str, i: usize) -> Vec<String> {
    let ip = CLIENT_IPS[i % CLIENT_IPS.len()];
    let body = json!({"user": user(&format!("u-{i}")), "client_ip": ip});
    let room: Value = http
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(LOBBY)
        .json(&body)
        .send()
        .await
        .expect("room")
        .json()
        .await
        .expect("room JSON");
    let name = room["room"].as_str().expect("room name");
    let guest: Value = http
        .post(format!("{base}/v1/rooms/{name}/participants"))
        .bearer_auth(LOBBY)
        .json(&body)
        .send()
        .await
        .expect("guest")
        .json()
        .await
        .expect("guest JSON");
    let select = format!("{base}/v1/regions/select?ip={ip}");
    let chosen = http
        .get(select)
        .bearer_auth(LOBBY)
        .send()
        .await
        .expect("select");
    assert_eq!(chosen.status(), 200);
    let regions = http.get(format!("{base}/v1/regions")).bearer_auth(ADMIN);
    assert_eq!(regions.send().await.expect("regions").status(), 200);
    let refused = http
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(WRONG)
        .json(&body);
    assert_eq!(refused.send().await.expect("refused").status(), 401);
    [&room, &guest]
        .iter()
        .filter_map(|answer| answer["token"].as_str().map(str::to_owned))
        .collect()
}

/// The log once the reload line is in, so the whole load is in it.
async fn settle_log(app: &App) -> String {
    app.wait_until(20, "reload logged", || async {
        app.log
            .lock()
            .expect("log lock")
            .contains("credentials reloaded")
    })
    .await;
    app.log.lock().expect("log lock").clone()
}

/// The base64 lines of a PEM body; each would give away part of the key.
fn pem_lines(pem: &str) -> Vec<String> {
    let lines: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect();
    assert!(lines.len() > 10, "a PEM body: {pem}");
    lines
}

/// Each token whole and its signature alone.
fn token_parts(tokens: &[String]) -> Vec<String> {
    let mut parts = Vec::new();
    for token in tokens {
        parts.push(token.clone());
        parts.push(token.rsplit('.').next().expect("signature").to_owned());
    }
    parts
}
