//! Bad input gets a 4xx JSON error that says what to fix; credentials are enforced.

use serde_json::json;

use crate::helpers::{Answer, Options, spawn_app};

fn assert_error(answer: &Answer, status: u16, code: &str, mentions: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.json["error"]["code"], code, "{}", answer.text);
    let message = answer.json["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(mentions),
        "{message:?} should mention {mentions:?}"
    );
}

/// Every kind of bad body is a 4xx naming the problem.
#[tokio::test]
async fn bad_room_requests() {
    let app = spawn_app(Options::default()).await;
    let url = format!("{}/v1/rooms", app.base);
    let raw = |body: &str| {
        app.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    assert_error(
        &app.send(raw("{\"user\":")).await,
        400,
        "malformed_json",
        "EOF",
    );
    assert_error(
        &app.send(raw("{\"user\": 5}")).await,
        422,
        "invalid_body",
        "user",
    );
    assert_error(
        &app.send(raw("{}")).await,
        422,
        "invalid_body",
        "missing field `user`",
    );
    let big = format!(
        "{{\"user\":{{\"id\":\"a\",\"name\":\"{}\"}}}}",
        "x".repeat(40_000)
    );
    assert_error(&app.send(raw(&big)).await, 413, "body_too_large", "16384");
    // A fresh connection: the server closes the one it answered 413 early on.
    let plain = reqwest::Client::new().post(&url).body("{}");
    assert_error(
        &app.send(plain).await,
        415,
        "unsupported_media_type",
        "application/json",
    );

    let user = |name: &str| json!({"user": {"id": "u", "name": name}, "client_ip": "8.8.8.8"});
    assert_error(
        &app.create_room(&user("")).await,
        422,
        "invalid_user",
        "user.name must not be empty",
    );
    assert_error(
        &app.create_room(&user(&"n".repeat(500))).await,
        422,
        "invalid_user",
        "500 characters",
    );
    assert_error(
        &app.create_room(&user("a\u{7}b")).await,
        422,
        "invalid_user",
        "control",
    );
    let bad_ip = json!({"user": {"id": "u", "name": "n"}, "client_ip": "999.1.1.1"});
    assert_error(
        &app.create_room(&bad_ip).await,
        422,
        "invalid_ip",
        "'999.1.1.1'",
    );
    let extra = json!({"user": {"id": "u", "name": "n"}, "colour": "red"});
    assert_error(
        &app.create_room(&extra).await,
        422,
        "invalid_body",
        "colour",
    );
    let many = json!({"user": {"id": "u", "name": "n"}, "participants": 0});
    assert_error(
        &app.create_room(&many).await,
        422,
        "invalid_participants",
        "1 to 1000",
    );
}

/// Bad queries, unknown routes and wrong methods get JSON errors too.
#[tokio::test]
async fn bad_queries_and_routes() {
    let app = spawn_app(Options::default()).await;
    assert_error(
        &app.select("not-an-ip").await,
        422,
        "invalid_ip",
        "not-an-ip",
    );
    assert_error(
        &app.get("/v1/regions/select?ip=1.1.1.1&x=1").await,
        400,
        "invalid_query",
        "x",
    );
    assert_error(&app.get("/nope").await, 404, "not_found", "no such route");
    assert_error(
        &app.get("/v1/rooms").await,
        405,
        "method_not_allowed",
        "method",
    );
    assert_error(
        &app.get("/asap/CWMKey.pem").await,
        404,
        "unknown_key",
        "CWMKey",
    );
}

/// An error quoting kilobytes of what the client sent quotes only their start.
#[tokio::test]
async fn long_quoted_input_is_cut() {
    let app = spawn_app(Options::default()).await;
    let name = "x".repeat(10_000);
    let answer = app
        .get(&format!("/v1/regions/select?ip=1.1.1.1&{name}=1"))
        .await;
    assert_error(&answer, 400, "invalid_query", "xxxx");
    assert!(answer.text.len() < 1_000, "{} bytes", answer.text.len());
    assert!(answer.text.contains("(cut)"), "{}", answer.text);
}

/// Without the select IP, the peer address (loopback here) is used.
#[tokio::test]
async fn peer_address_is_the_default() {
    let app = spawn_app(Options::default()).await;
    let answer = app.get("/v1/regions/select").await;
    assert_eq!(
        answer.json["decision"]["reason"], "default",
        "{}",
        answer.text
    );
}

/// With lobby credentials configured, lobby routes need one; public routes do not.
#[tokio::test]
async fn lobby_credentials_are_enforced() {
    let good = "lobby-credential-0123456789";
    let app = spawn_app(Options::default().env(
        "GEOBRIDGE_LOBBY_CREDENTIALS",
        &format!("{good},second-credential-abcdefgh"),
    ))
    .await;
    let body = json!({"user": {"id": "u", "name": "n"}, "client_ip": "8.8.8.8"});
    let post = |auth: Option<&str>| {
        let request = app.http.post(format!("{}/v1/rooms", app.base)).json(&body);
        match auth {
            Some(a) => request.header("authorization", a),
            None => request,
        }
    };
    assert_error(&app.send(post(None)).await, 401, "unauthorized", "Bearer");
    assert_error(
        &app.send(post(Some("Bearer wrong-credential-xxxxxx"))).await,
        401,
        "unauthorized",
        "not valid",
    );
    assert_error(
        &app.send(post(Some(good))).await,
        401,
        "unauthorized",
        "Bearer",
    );
    assert_eq!(
        app.send(post(Some(&format!("Bearer {good}")))).await.status,
        201
    );
    assert_eq!(
        app.send(post(Some("Bearer second-credential-abcdefgh")))
            .await
            .status,
        201
    );
    let select = app
        .http
        .get(format!("{}/v1/regions/select?ip=1.1.1.1", app.base));
    assert_eq!(app.send(select).await.status, 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(open).await.status, 200, "{open}");
    }
    assert!(
        !app.log.lock().expect("log").contains(good),
        "credential logged"
    );
}

/// Forwarding headers are believed only from trusted proxies.
#[tokio::test]
async fn forwarded_headers_from_trusted_proxies() {
    let trusting =
        spawn_app(Options::default().env("GEOBRIDGE_TRUSTED_PROXIES", "127.0.0.0/8")).await;
    let plain = spawn_app(Options::default()).await;
    for (app, expected) in [(&trusting, "eu-west"), (&plain, "eu-central")] {
        let request = app
            .http
            .get(format!("{}/v1/regions/select", app.base))
            .header("x-forwarded-for", "6.6.6.6, 81.2.69.142");
        assert_eq!(app.send(request).await.json["region"], expected);
    }
    let request = trusting
        .http
        .get(format!("{}/v1/regions/select", trusting.base))
        .header("forwarded", "for=\"[2001:4860:4860::8888]:443\"");
    assert_eq!(trusting.send(request).await.json["region"], "ca-central");
}

/// A path parameter that does not percent-decode to UTF-8 is a 400 in the error envelope on
/// every route that has one (found by fuzzing the router: it was a plain-text 400).
#[tokio::test]
async fn undecodable_path_parameters() {
    let app = spawn_app(Options::default()).await;
    let cases = [
        (reqwest::Method::GET, "/v1/regions/i%%%bb%FF"),
        (reqwest::Method::PUT, "/v1/regions/%FF"),
        (reqwest::Method::DELETE, "/v1/regions/%FF"),
        (reqwest::Method::GET, "/v1/bridges/%C3%28"),
        (reqwest::Method::PATCH, "/v1/bridges/%FF"),
        (reqwest::Method::DELETE, "/v1/bridges/%FF"),
        (reqwest::Method::POST, "/v1/rooms/%FF/participants"),
        (reqwest::Method::GET, "/asap/%FF.pem"),
    ];
    for (method, path) in cases {
        let request = app.http.request(method, format!("{}{path}", app.base));
        let request = request.json(&json!({"admin_state": "drain"}));
        let answer = app.send(request).await;
        assert_error(&answer, 400, "invalid_path", "UTF-8");
    }
}

/// A declared body over the limit is refused at once, before the body arrives.
#[tokio::test]
async fn oversized_declared_body_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(Options::default()).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = "POST /v1/rooms HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 99999999999\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 2048];
    let n = stream.read(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}
