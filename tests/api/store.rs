//! The store on SQLite and on a real PostgreSQL server: one suite for both, crash safety,
//! and two instances sharing one PostgreSQL database.

use std::time::Duration;

use geobridge::catalog::{AdminState, Bridge, BridgeId, Region, RegionId};
use geobridge::geo::Point;
use geobridge::store::{self, Put, RoomRecord, Store};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{App, FakeBridge, Options, fresh_postgres_database, spawn_app};

const ADMIN: &str = "admin-credential-0123456789";
const LOBBY: &str = "lobby-credential-0123456789";

fn region(id: &str) -> Region {
    Region {
        id: RegionId::parse(id).expect("id"),
        name: id.to_owned(),
        point: Point {
            latitude: 10.0,
            longitude: 20.0,
        },
        group: None,
        bias_km: 0.0,
        shard: None,
    }
}

fn bridge(id: &str, region: &str) -> Bridge {
    Bridge {
        id: BridgeId::parse(id).expect("id"),
        region: RegionId::parse(region).expect("id"),
        url: "http://127.0.0.1:9".to_owned(),
        weight: 1,
        stats: true,
        admin_state: AdminState::Active,
    }
}

/// The same checks, run against one backend.
async fn store_suite(url: &str) {
    let store = Store::open(url).await.expect("opens");
    store
        .seed(
            &[region("cfg-a"), region("cfg-b")],
            &[bridge("cfg-1", "cfg-a")],
        )
        .await
        .expect("seed");
    let v0 = store.version().await.expect("version");

    assert_eq!(
        store.put_region(&region("api-r")).await.expect("put"),
        Put::Created
    );
    assert_eq!(
        store.put_region(&region("api-r")).await.expect("put"),
        Put::Replaced
    );
    assert!(
        store.version().await.expect("version") > v0,
        "changes bump the version"
    );
    let conflict = store
        .put_region(&region("cfg-a"))
        .await
        .expect_err("config-managed");
    assert!(
        conflict.to_string().contains("managed by the config file"),
        "{conflict}"
    );

    assert_eq!(
        store
            .put_bridge(&bridge("api-1", "api-r"))
            .await
            .expect("put"),
        Put::Created
    );
    let missing = store
        .put_bridge(&bridge("api-2", "nowhere"))
        .await
        .expect_err("no region");
    assert!(
        missing
            .to_string()
            .contains("region 'nowhere' does not exist"),
        "{missing}"
    );
    let busy = store
        .delete_region(&RegionId::parse("api-r").expect("id"))
        .await
        .expect_err("busy");
    assert!(busy.to_string().contains("api-1"), "{busy}");

    let cfg = BridgeId::parse("cfg-1").expect("id");
    assert!(
        store
            .set_admin_state(&cfg, AdminState::Drain)
            .await
            .expect("drain")
    );
    let orphan = bridge("api-9", "cfg-b");
    assert_eq!(store.put_bridge(&orphan).await.expect("put"), Put::Created);
    // Re-seeding keeps the operator's drain and drops what the file no longer lists; a
    // dropped region that still holds API bridges is handed over to the API.
    store
        .seed(&[region("cfg-a")], &[bridge("cfg-1", "cfg-a")])
        .await
        .expect("reseed");
    let registry = store.registry().await.expect("registry");
    let ids: Vec<&str> = registry
        .regions
        .iter()
        .map(|r| r.item.id.as_str())
        .collect();
    assert_eq!(ids, ["cfg-a", "cfg-b", "api-r"]);
    let handed_over = registry
        .regions
        .iter()
        .find(|r| r.item.id.as_str() == "cfg-b");
    assert_eq!(
        handed_over.expect("cfg-b").managed_by,
        store::ManagedBy::Api
    );
    assert!(store.delete_bridge(&orphan.id).await.expect("delete"));
    assert!(
        store
            .delete_region(&RegionId::parse("cfg-b").expect("id"))
            .await
            .expect("delete")
    );
    let cfg_bridge = registry
        .bridges
        .iter()
        .find(|b| b.item.id == cfg)
        .expect("cfg-1");
    assert_eq!(cfg_bridge.item.admin_state, AdminState::Drain);
    assert_eq!(cfg_bridge.managed_by, store::ManagedBy::Config);

    assert!(
        store
            .delete_bridge(&BridgeId::parse("api-1").expect("id"))
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_region(&RegionId::parse("api-r").expect("id"))
            .await
            .expect("delete")
    );

    let now = store::now_seconds();
    let room = |name: &str, expires_at| RoomRecord {
        name: name.to_owned(),
        shard: "default".to_owned(),
        region: "cfg-a".to_owned(),
        host_id: "h".to_owned(),
        created_at: now,
        expires_at,
    };
    store
        .insert_room(&room("live", now + 60))
        .await
        .expect("insert");
    store
        .insert_room(&room("old", now - 1))
        .await
        .expect("insert");
    assert_eq!(
        store.live_room("live", now).await.expect("read"),
        Some(room("live", now + 60))
    );
    assert_eq!(store.live_room("old", now).await.expect("read"), None);
    assert_eq!(store.purge_rooms(now).await.expect("purge"), 1);
    assert_eq!(store.count_live_rooms(now).await.expect("count"), 1);
    store.close().await;

    // A database migrated by a newer geobridge is refused with a message that says so.
    let newer = Store::open(url).await.expect("reopens");
    sqlx_execute(
        url,
        "INSERT INTO geobridge_schema (version, applied_at) VALUES (99, 0)",
    )
    .await;
    newer.close().await;
    let refused = Store::open(url).await.err().expect("newer schema refused");
    assert!(
        refused.to_string().contains("schema is version 99"),
        "{refused}"
    );
}

async fn sqlx_execute(url: &str, sql: impl Into<String>) {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connects");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.into()))
        .execute(&mut conn)
        .await
        .expect("executes");
}

/// The store suite on SQLite.
#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    store_suite(&store::sqlite_url(dir.path())).await;
}

/// The store suite on PostgreSQL.
#[tokio::test]
async fn store_on_postgres() {
    store_suite(&fresh_postgres_database().await).await;
}

/// Registrations stream in from 8 clients while the process is killed with SIGKILL; after a
/// restart every registration that was answered 2xx is there.
async fn crash_keeps_acknowledged_writes(options: Options, restart: impl Fn(&App) -> Options) {
    let mut app = spawn_app(options).await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (http, base, acked) = (app.http.clone(), app.base.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..200 {
                let id = format!("crash-{writer}-{n}");
                let body = json!({"region": "eu-west", "url": "http://127.0.0.1:9"});
                let sent = http
                    .put(format!("{base}/v1/bridges/{id}"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => acked.lock().expect("lock").push(id),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    let delay = 150 + u64::from(std::process::id() % 400);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    app.kill();
    for writer in writers {
        let _ = writer.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before the kill"
    );
    let again = spawn_app(restart(&app)).await;
    let listed = again
        .send(again.authed(Method::GET, "/v1/bridges", ADMIN))
        .await
        .json;
    let stored: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_owned())
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
}

/// Crash safety on SQLite.
#[tokio::test]
async fn crash_safety_sqlite() {
    let options = Options::default().env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN);
    crash_keeps_acknowledged_writes(options, |app| {
        let state = app.dir.path().join("state");
        Options::default()
            .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN)
            .env("GEOBRIDGE_STATE_DIR", state.to_str().expect("utf-8"))
    })
    .await;
}

/// Crash safety on PostgreSQL.
#[tokio::test]
async fn crash_safety_postgres() {
    let url = fresh_postgres_database().await;
    let options = || {
        Options::default()
            .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN)
            .env("GEOBRIDGE_DATABASE_URL", &url)
    };
    crash_keeps_acknowledged_writes(options(), |_| options()).await;
}

/// Two instances on one PostgreSQL database see each other's registry changes within
/// 2 seconds, and a room created on one accepts guests on the other.
#[tokio::test]
async fn two_instances_share_one_registry() {
    let url = fresh_postgres_database().await;
    let options = || {
        Options::default()
            .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN)
            .env("GEOBRIDGE_LOBBY_CREDENTIALS", LOBBY)
            .env("GEOBRIDGE_DATABASE_URL", &url)
    };
    let (a, b) = (spawn_app(options()).await, spawn_app(options()).await);
    let bridge = FakeBridge::start().await;
    let ireland = "87.32.0.1";
    let select_on_b = || async {
        let request = b.authed(
            Method::GET,
            &format!("/v1/regions/select?ip={ireland}"),
            LOBBY,
        );
        b.send(request).await.json
    };

    let region = json!({"latitude": 53.35, "longitude": -6.26, "group": "europe"});
    let put = a
        .authed(Method::PUT, "/v1/regions/eu-ireland", ADMIN)
        .json(&region);
    assert_eq!(a.send(put).await.status, 201);
    let put = a
        .authed(Method::PUT, "/v1/bridges/dub-1", ADMIN)
        .json(&json!({"region": "eu-ireland", "url": bridge.url}));
    assert_eq!(a.send(put).await.status, 201);
    b.wait_until(2, "B uses the bridge registered on A", || async {
        select_on_b().await["region"] == "eu-ireland"
    })
    .await;

    let patch = a
        .authed(Method::PATCH, "/v1/bridges/dub-1", ADMIN)
        .json(&json!({"admin_state": "drain"}));
    assert_eq!(a.send(patch).await.status, 200);
    b.wait_until(2, "B avoids the bridge drained on A", || async {
        select_on_b().await["region"] != "eu-ireland"
    })
    .await;

    let delete = a.authed(Method::DELETE, "/v1/bridges/dub-1", ADMIN);
    assert_eq!(a.send(delete).await.status, 204);
    b.wait_until(2, "B forgets the bridge deleted on A", || async {
        let request = b.authed(Method::GET, "/v1/bridges/dub-1", ADMIN);
        b.send(request).await.status == 404
    })
    .await;

    let host = json!({"user": {"id": "h", "name": "Host"}, "client_ip": "81.2.69.142"});
    let created = a
        .send(a.authed(Method::POST, "/v1/rooms", LOBBY).json(&host))
        .await;
    let room = created.json["room"].as_str().expect("room").to_owned();
    let guest = json!({"user": {"id": "g", "name": "Guest"}, "client_ip": "8.8.8.8"});
    let path = format!("/v1/rooms/{room}/participants");
    let joined = b
        .send(b.authed(Method::POST, &path, LOBBY).json(&guest))
        .await;
    assert_eq!(joined.status, 201, "{}", joined.text);
    assert_eq!(joined.json["room"], room.as_str());
    assert_eq!(joined.json["region"], "us-west");
}

/// Concurrent writes on SQLite all succeed: a write transaction that reads before it writes
/// waits for the other writers instead of failing with "database is locked" (found by
/// Schemathesis as a 500 on `PUT /v1/bridges/{id}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&store::sqlite_url(dir.path()))
        .await
        .expect("store opens");
    store.put_region(&region("busy")).await.expect("region");
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..48 {
        let store = store.clone();
        writers.spawn(async move {
            let id = format!("jvb-{}", i / 3 % 6);
            match i % 3 {
                0 => store.put_bridge(&bridge(&id, "busy")).await.map(|_| ()),
                1 => store
                    .put_region(&region(&format!("r-{i}")))
                    .await
                    .map(|_| ()),
                _ => {
                    let id = BridgeId::parse(&id).expect("id");
                    let state = AdminState::Drain;
                    store.set_admin_state(&id, state).await.map(|_| ())
                }
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = writers.join_next().await {
        if let Err(error) = done.expect("writer task") {
            failures.push(error.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} writes failed: {failures:?}",
        failures.len()
    );
    let registry = store.registry().await.expect("registry");
    assert_eq!(registry.regions.len(), 1 + 16);
    assert_eq!(registry.bridges.len(), 6);
}

/// A TCP relay on 127.0.0.1 to `target`: every connection through it ends when the task
/// running it is aborted, and its port refuses connections until a relay listens again.
fn relay(listener: tokio::net::TcpListener, target: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut links = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            links.spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    })
}

/// While PostgreSQL is out of reach, writes get a 503 `store_unavailable` that says to
/// retry (and when, in `Retry-After`), selections go on from memory, and once the database
/// is back writes succeed again without a restart.
// The relay runs on its own worker: starting the app blocks the test's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_a_503_until_it_returns() {
    let direct = url::Url::parse(&fresh_postgres_database().await).expect("a URL");
    let target = format!(
        "{}:{}",
        direct.host_str().expect("a host"),
        direct.port().unwrap_or(5432)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut through = direct.clone();
    through.set_port(Some(port)).expect("a port");
    let mut link = relay(listener, target.clone());
    let options = Options::default()
        .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN)
        .env("GEOBRIDGE_LOBBY_CREDENTIALS", LOBBY)
        .env("GEOBRIDGE_DATABASE_URL", through.as_str());
    let app = spawn_app(options).await;
    let host = json!({"user": {"id": "h", "name": "Host"}, "client_ip": "81.2.69.142"});
    let create = || app.authed(Method::POST, "/v1/rooms", LOBBY).json(&host);
    assert_eq!(app.send(create()).await.status, 201);

    link.abort();
    let _ = (&mut link).await;
    let refused = app.send(create()).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.json["error"]["code"], "store_unavailable");
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    let select = app.authed(Method::GET, "/v1/regions/select?ip=8.8.8.8", LOBBY);
    let selected = app.send(select).await;
    assert_eq!(selected.json["region"], "us-west", "{}", selected.text);
    let store_up = |value: &'static str| {
        let app = &app;
        move || async move {
            let metrics = app.get("/metrics").await.text;
            metrics.contains(&format!("geobridge_store_up {value}"))
        }
    };
    app.wait_until(10, "geobridge_store_up is 0", store_up("0"))
        .await;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the relay's port again");
    let _link = relay(listener, target);
    app.wait_until(15, "rooms are created again", || async {
        app.send(create()).await.status == 201
    })
    .await;
    app.wait_until(15, "geobridge_store_up is 1 again", store_up("1"))
        .await;
    for logged in [
        "the database cannot be reached; writes get 503 until it is",
        "the database can be reached again",
    ] {
        app.wait_until(5, logged, || async {
            app.log.lock().expect("log").contains(logged)
        })
        .await;
    }

    // A database dropped under it is out of reach too, not an internal fault.
    let name = direct.path().trim_start_matches('/').to_owned();
    let drop = format!("DROP DATABASE {name} WITH (FORCE)");
    sqlx_execute(&crate::helpers::postgres_server(), drop).await;
    let refused = app.send(create()).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.json["error"]["code"], "store_unavailable");
}
