//! The admin API, the two roles, guests joining rooms, and room expiry (SQLite store).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{App, FakeBridge, Options, spawn_app};

const LOBBY: &str = "lobby-credential-0123456789";
const ADMIN: &str = "admin-credential-0123456789";
const UK: &str = "81.2.69.142";

fn secured() -> Options {
    Options::default()
        .env("GEOBRIDGE_LOBBY_CREDENTIALS", LOBBY)
        .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN)
}

async fn call(
    app: &App,
    method: Method,
    path: &str,
    who: &str,
    body: Option<Value>,
) -> crate::helpers::Answer {
    let request = app.authed(method, path, who);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    app.send(request).await
}

async fn select_as_lobby(app: &App, ip: &str) -> Value {
    call(
        app,
        Method::GET,
        &format!("/v1/regions/select?ip={ip}"),
        LOBBY,
        None,
    )
    .await
    .json
}

/// Regions and bridges are created, read, replaced, drained and deleted through the API,
/// and selection follows every change.
#[tokio::test]
async fn operators_manage_the_registry() {
    let bridge = FakeBridge::start().await;
    let app = spawn_app(secured()).await;
    let put = |path: &'static str, body: Value| call(&app, Method::PUT, path, ADMIN, Some(body));

    let region =
        json!({"name": "Ireland", "latitude": 53.35, "longitude": -6.26, "group": "europe"});
    let created = put("/v1/regions/eu-ireland", region.clone()).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["managed_by"], "api");
    assert_eq!(created.json["unwatched"], true);
    assert_eq!(
        put("/v1/regions/eu-ireland", region).await.status,
        200,
        "replace answers 200"
    );
    let dublin = "87.32.0.1";
    assert_eq!(select_as_lobby(&app, dublin).await["region"], "eu-ireland");

    let b = json!({"region": "eu-ireland", "url": bridge.url});
    let created = put("/v1/bridges/jvb-dub-1", b).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["admin_state"], "active");
    app.wait_until(10, "bridge probed up", || async {
        app.bridge_health("jvb-dub-1").await["state"] == "up"
    })
    .await;
    let answer = select_as_lobby(&app, dublin).await;
    assert_eq!(answer["region"], "eu-ireland");
    assert_eq!(answer["decision"]["unwatched"], false, "{answer}");

    let drained = call(
        &app,
        Method::PATCH,
        "/v1/bridges/jvb-dub-1",
        ADMIN,
        Some(json!({"admin_state": "drain"})),
    )
    .await;
    assert_eq!(drained.status, 200, "{}", drained.text);
    assert_eq!(drained.json["admin_state"], "drain");
    assert_eq!(
        drained.json["health"]["state"], "up",
        "responses carry live health"
    );
    assert_ne!(select_as_lobby(&app, dublin).await["region"], "eu-ireland");

    let refused = call(&app, Method::DELETE, "/v1/regions/eu-ireland", ADMIN, None).await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .expect("message")
            .contains("jvb-dub-1")
    );

    assert_eq!(
        call(&app, Method::DELETE, "/v1/bridges/jvb-dub-1", ADMIN, None)
            .await
            .status,
        204
    );
    assert_eq!(
        call(&app, Method::DELETE, "/v1/regions/eu-ireland", ADMIN, None)
            .await
            .status,
        204
    );
    assert_eq!(
        call(&app, Method::GET, "/v1/regions/eu-ireland", ADMIN, None)
            .await
            .status,
        404
    );
    assert_eq!(select_as_lobby(&app, dublin).await["region"], "eu-west");
}

/// A bridge's series follow it: a moved bridge's series leave the region it left, and a
/// deleted bridge's series leave `/metrics` altogether.
#[tokio::test]
async fn bridge_series_leave_with_their_bridge() {
    let bridge = FakeBridge::start().await;
    let app = spawn_app(secured()).await;
    let put = |region: &str| {
        let body = json!({"region": region, "url": bridge.url});
        call(&app, Method::PUT, "/v1/bridges/jvb-t1", ADMIN, Some(body))
    };
    let metrics = || async { app.get("/metrics").await.text };
    let up_in =
        |region: &str| format!("geobridge_bridge_up{{bridge=\"jvb-t1\",region=\"{region}\"}} 1");

    assert_eq!(put("eu-west").await.status, 201);
    app.wait_until(10, "the bridge's series", || async {
        metrics().await.contains(&up_in("eu-west"))
    })
    .await;
    assert_eq!(put("eu-central").await.status, 200);
    app.wait_until(10, "the series under the new region only", || async {
        let text = metrics().await;
        text.contains(&up_in("eu-central"))
            && !text.contains("bridge=\"jvb-t1\",region=\"eu-west\"")
    })
    .await;
    let deleted = call(&app, Method::DELETE, "/v1/bridges/jvb-t1", ADMIN, None).await;
    assert_eq!(deleted.status, 204);
    app.wait_until(10, "no series of the deleted bridge", || async {
        !metrics().await.contains("bridge=\"jvb-t1\"")
    })
    .await;
}

/// Bad registry input is a 4xx that names what to fix.
#[tokio::test]
async fn registry_input_is_checked() {
    let app = spawn_app(secured()).await;
    let put = |path: &'static str, body: Value| call(&app, Method::PUT, path, ADMIN, Some(body));
    let cases = [
        (
            "/v1/regions/EU",
            json!({"latitude": 1, "longitude": 1}),
            422,
            "'EU' is not a valid id",
        ),
        (
            "/v1/regions/x",
            json!({"latitude": 91, "longitude": 1}),
            422,
            "latitude 91",
        ),
        (
            "/v1/regions/x",
            json!({"name": "a\u{202e}b\u{7}", "latitude": 1, "longitude": 1}),
            422,
            "control characters",
        ),
        (
            "/v1/regions/x",
            json!({"group": "Bad Group!", "latitude": 1, "longitude": 1}),
            422,
            "group 'Bad Group!'",
        ),
        (
            "/v1/bridges/b",
            json!({"region": "eu-west", "url": "http://169.254.169.254"}),
            422,
            "link-local",
        ),
        (
            "/v1/bridges/b",
            json!({"region": "eu-west", "url": "http://127.0.0.1:18\n191"}),
            422,
            "control characters",
        ),
        (
            "/v1/regions/x",
            json!({"id": "y", "latitude": 1, "longitude": 1}),
            422,
            "differs",
        ),
        (
            "/v1/regions/x",
            json!({"latitude": 1, "longitude": 1, "shard": "nope"}),
            409,
            "unknown shard 'nope'",
        ),
        (
            "/v1/bridges/b",
            json!({"region": "eu-wst", "url": "http://h:1"}),
            422,
            "unknown region 'eu-wst'; known: us-east",
        ),
        (
            "/v1/bridges/b",
            json!({"region": "eu-west", "url": "ftp://h"}),
            422,
            "http://",
        ),
        (
            "/v1/bridges/b",
            json!({"region": "eu-west", "url": "http://u:p@h:1"}),
            422,
            "credentials",
        ),
        (
            "/v1/bridges/b",
            json!({"region": "eu-west"}),
            422,
            "missing field `url`",
        ),
    ];
    for (path, body, status, mentions) in cases {
        let answer = put(path, body).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.text);
        let message = answer.json["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(mentions),
            "{path}: {message:?} should mention {mentions:?}"
        );
    }
    let patch = call(
        &app,
        Method::PATCH,
        "/v1/bridges/none",
        ADMIN,
        Some(json!({"admin_state": "sleepy"})),
    )
    .await;
    assert_eq!(patch.status, 422, "{}", patch.text);
    let missing = call(
        &app,
        Method::PATCH,
        "/v1/bridges/none",
        ADMIN,
        Some(json!({"admin_state": "drain"})),
    )
    .await;
    assert_eq!(missing.status, 404);
    // Pins and the default region point at config regions: deleting one is refused.
    let default = call(&app, Method::DELETE, "/v1/regions/eu-central", ADMIN, None).await;
    assert_eq!(default.status, 409, "{}", default.text);
    assert!(default.text.contains("config file"), "{}", default.text);
}

/// Every route checks its role: none → 401, unknown → 401, wrong role → 403, right → 2xx.
#[tokio::test]
async fn every_route_checks_its_role() {
    let app = spawn_app(secured()).await;
    let room = json!({"user": {"id": "u", "name": "n"}, "client_ip": UK});
    let routes: Vec<(Method, &str, Option<Value>, &str)> = vec![
        (Method::POST, "/v1/rooms", Some(room.clone()), "lobby"),
        (Method::GET, "/v1/regions/select?ip=1.1.1.1", None, "lobby"),
        (
            Method::POST,
            "/v1/rooms/abc/participants",
            Some(room),
            "lobby",
        ),
        (Method::GET, "/v1/regions", None, "either"),
        (Method::GET, "/v1/regions/eu-west", None, "either"),
        (Method::GET, "/v1/bridges", None, "either"),
        (Method::GET, "/v1/bridges/x", None, "either"),
        (
            Method::PUT,
            "/v1/regions/r1",
            Some(json!({"latitude": 1, "longitude": 2})),
            "admin",
        ),
        (Method::DELETE, "/v1/regions/r1", None, "admin"),
        (
            Method::PUT,
            "/v1/bridges/b1",
            Some(json!({"region": "eu-west", "url": "http://127.0.0.1:9"})),
            "admin",
        ),
        (
            Method::PATCH,
            "/v1/bridges/b1",
            Some(json!({"admin_state": "drain"})),
            "admin",
        ),
        (Method::DELETE, "/v1/bridges/b1", None, "admin"),
    ];
    for (method, path, body, role) in routes {
        let send = |who: &'static str| call(&app, method.clone(), path, who, body.clone());
        assert_eq!(
            send("").await.status,
            401,
            "{method} {path} without credential"
        );
        assert_eq!(
            send("revoked-credential-000000").await.status,
            401,
            "{method} {path}"
        );
        let (right, wrong) = match role {
            "lobby" => (LOBBY, Some(ADMIN)),
            "admin" => (ADMIN, Some(LOBBY)),
            _ => (LOBBY, None),
        };
        if let Some(wrong) = wrong {
            let answer = send(wrong).await;
            assert_eq!(
                answer.status, 403,
                "{method} {path} with the other role: {}",
                answer.text
            );
            assert_eq!(answer.json["error"]["code"], "forbidden");
        }
        let answer = send(right).await;
        assert!(
            answer.status.as_u16() < 500 && answer.status != 401 && answer.status != 403,
            "{method} {path} with the right role: {} {}",
            answer.status,
            answer.text
        );
        if role == "either" {
            assert_ne!(send(ADMIN).await.status, 403, "{method} {path} for admins");
        }
    }
    let log = app.log.lock().expect("log").clone();
    assert!(
        !log.contains(LOBBY) && !log.contains(ADMIN),
        "a credential was logged"
    );
}

/// A credential removed from the credential file stops working after SIGHUP.
#[tokio::test]
async fn revoked_credentials_stop_working_on_reload() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("lobby.txt");
    std::fs::write(
        &file,
        "# lobby credentials\nold-lobby-credential-000001\nnew-lobby-credential-000002\n",
    )
    .expect("write");
    let app = spawn_app(Options::default().env(
        "GEOBRIDGE_LOBBY_CREDENTIALS_FILE",
        file.to_str().expect("utf-8"),
    ))
    .await;
    let select = |who: &'static str| {
        call(
            &app,
            Method::GET,
            "/v1/regions/select?ip=1.1.1.1",
            who,
            None,
        )
    };
    assert_eq!(select("old-lobby-credential-000001").await.status, 200);
    std::fs::write(&file, "new-lobby-credential-000002\n").expect("write");
    app.hangup();
    app.wait_until(10, "reload", || async {
        select("old-lobby-credential-000001").await.status == 401
    })
    .await;
    assert_eq!(select("new-lobby-credential-000002").await.status, 200);
}

/// A guest joins a host's room: same room name and shard, the guest's own region.
#[tokio::test]
async fn guests_join_existing_rooms() {
    let app = spawn_app(secured()).await;
    let host = json!({"user": {"id": "host", "name": "Host"}, "client_ip": UK});
    let created = call(&app, Method::POST, "/v1/rooms", LOBBY, Some(host)).await;
    assert_eq!(created.status, 201);
    let room = created.json["room"].as_str().expect("room").to_owned();
    let guest = json!({"user": {"id": "guest", "name": "Gäst"}, "client_ip": "1.1.1.1"});
    let path = format!("/v1/rooms/{room}/participants");
    let joined = call(&app, Method::POST, &path, LOBBY, Some(guest.clone())).await;
    assert_eq!(joined.status, 201, "{}", joined.text);
    assert_eq!(joined.json["room"], room.as_str());
    assert_eq!(joined.json["region"], "ap-southeast-2");
    let token = joined.json["token"].as_str().expect("token");
    let claims: Value = serde_json::from_slice(&crate::helpers::b64url(
        token.split('.').nth(1).expect("claims"),
    ))
    .expect("json");
    assert_eq!(claims["room"], room.as_str());
    assert_eq!(claims["context"]["region"], "ap-southeast-2");
    assert_eq!(claims["context"]["user"]["name"], "Gäst");
    assert!(
        joined.json["link"]
            .as_str()
            .expect("link")
            .starts_with(&format!("https://meet.example.com/{room}?jwt="))
    );

    let unknown = call(
        &app,
        Method::POST,
        "/v1/rooms/no-such-room/participants",
        LOBBY,
        Some(guest.clone()),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json["error"]["code"], "unknown_room");
    let bad = call(
        &app,
        Method::POST,
        "/v1/rooms/Bad%20Room/participants",
        LOBBY,
        Some(guest),
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
}

/// Moves every room's expiry 61 seconds into the past.
const AGE_ROOMS: &str = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
    c.execute('UPDATE rooms SET expires_at = expires_at - 61'); c.commit()";

/// Rooms expire after their lifetime: guests then get 404.
#[tokio::test]
async fn expired_rooms_refuse_guests() {
    let app = spawn_app(Options::default().env("GEOBRIDGE_ROOM_LIFETIME_SECONDS", "60")).await;
    let host = json!({"user": {"id": "host", "name": "Host"}, "client_ip": UK});
    let room = app.create_room(&host).await.json["room"]
        .as_str()
        .expect("room")
        .to_owned();
    // Age the room by rewriting its expiry in the database, as 61 seconds would.
    let db = app.dir.path().join("state/geobridge.db");
    let status = std::process::Command::new("python3")
        .args(["-c", AGE_ROOMS])
        .arg(&db)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let guest = json!({"user": {"id": "g", "name": "G"}, "client_ip": UK});
    let answer = call(
        &app,
        Method::POST,
        &format!("/v1/rooms/{room}/participants"),
        "",
        Some(guest),
    )
    .await;
    assert_eq!(answer.status, 404, "{}", answer.text);
}

/// With two shards, a room's link points at its shard, the token carries that shard's `sub`,
/// and a guest from far away stays on the room's shard.
#[tokio::test]
async fn rooms_stay_on_their_shard() {
    let shards = "\n[[shards]]\nid = \"meet-us\"\nurl = \"https://meet-us.example.com\"\n\
                  \n[[shards]]\nid = \"meet-eu\"\nurl = \"https://meet-eu.example.com/\"\n\
                  subject = \"meet-eu.example.com\"\n";
    let config = crate::helpers::example_config().replace(
        "group = \"europe\"",
        "group = \"europe\"\nshard = \"meet-eu\"",
    ) + shards;
    let app = spawn_app(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let host = json!({"user": {"id": "h", "name": "Host"}, "client_ip": UK});
    let created = app.create_room(&host).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let room = created.json["room"].as_str().expect("room").to_owned();
    let link = created.json["link"].as_str().expect("link");
    assert!(
        link.starts_with(&format!("https://meet-eu.example.com/{room}?jwt=")),
        "{link}"
    );

    let guest = json!({"user": {"id": "g", "name": "Guest"}, "client_ip": "8.8.8.8"});
    let path = format!("/v1/rooms/{room}/participants");
    let joined = call(&app, Method::POST, &path, "", Some(guest.clone())).await;
    assert_eq!(joined.status, 201, "{}", joined.text);
    assert_eq!(
        joined.json["region"], "eu-west",
        "nearest region on the room's shard"
    );
    let token = joined.json["token"].as_str().expect("token");
    let claims = token.split('.').nth(1).expect("claims");
    let claims: Value = serde_json::from_slice(&crate::helpers::b64url(claims)).expect("json");
    assert_eq!(claims["sub"], "meet-eu.example.com");
    // A new room for the same Californian lands on the US shard.
    let own = app.create_room(&guest).await;
    assert_eq!(own.json["region"], "us-west");
    assert!(
        own.json["link"]
            .as_str()
            .expect("link")
            .starts_with("https://meet-us.example.com/")
    );
}

/// Changing or deleting a bridge or region of the config file is refused with the same
/// error code, whichever route and method tried it.
#[tokio::test]
async fn config_entries_are_refused_alike() {
    let options = secured().bridge("cfg-bridge", "eu-west", "http://127.0.0.1:9/");
    let app = spawn_app(options).await;
    let body = json!({"region": "eu-west", "url": "http://127.0.0.1:9/"});
    let attempts = [
        (Method::PUT, "/v1/bridges/cfg-bridge", Some(body)),
        (Method::DELETE, "/v1/bridges/cfg-bridge", None),
        (Method::DELETE, "/v1/regions/eu-central", None),
    ];
    for (method, path, body) in attempts {
        let refused = call(&app, method.clone(), path, ADMIN, body).await;
        assert_eq!(refused.status, 409, "{method} {path}: {}", refused.text);
        let code = &refused.json["error"]["code"];
        assert_eq!(
            code, "managed_by_config",
            "{method} {path}: {}",
            refused.text
        );
    }
}
