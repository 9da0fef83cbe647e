//! Serving through GeoIP updates, overload, slow clients and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use mmdb_writer::Writer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Options, spawn_app};

/// A tiny City database placing 8.8.8.0/24 at one point, of the given type.
fn database(kind: &str, country: &str, continent: &str, lat: f64, lon: f64) -> Vec<u8> {
    let mut writer = Writer::builder(kind)
        .description(&[("en", "geobridge test database")])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(1_780_000_000))
        .build();
    let record = json!({
        "continent": {"code": continent},
        "country": {"iso_code": country},
        "subdivisions": [{"names": {"en": "Somewhere"}}],
        "location": {"latitude": lat, "longitude": lon},
    });
    writer
        .insert("8.8.8.0/24".parse::<ipnet::IpNet>().expect("net"), &record)
        .expect("insert");
    writer.to_bytes().expect("serialise")
}

/// Replaces `path` the way geoipupdate does: write aside, then rename over.
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

fn rejected_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("geobridge_geo_reloads_total{outcome=\"rejected\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// While a load generator keeps asking, the database file is replaced ten times with good,
/// truncated, corrupt and wrong-type files: no request fails, good files take effect, bad
/// ones are refused and counted while the old data keeps serving.
#[tokio::test]
async fn geo_database_reloads_under_load() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("geo.mmdb");
    let sydney = database("GeoIP2-City", "AU", "OC", -33.87, 151.21);
    let london = database("GeoIP2-City", "GB", "EU", 51.51, -0.13);
    let asn = database("GeoLite2-ASN", "GB", "EU", 51.51, -0.13);
    std::fs::write(&path, &sydney).expect("write");
    let app = spawn_app(
        Options::default()
            .env("GEOBRIDGE_GEO_DATABASE", path.to_str().expect("utf-8"))
            .env("GEOBRIDGE_GEO_WATCH_MS", "50"),
    )
    .await;
    assert_eq!(app.select("8.8.8.8").await.json["region"], "ap-southeast-2");

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, url) = (
            app.http.clone(),
            format!("{}/v1/regions/select?ip=8.8.8.8", app.base),
        );
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < 200_000 {
                sent.fetch_add(1, Ordering::Relaxed);
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let truncated = london[..london.len() / 2].to_vec();
    let mut corrupt = london.clone();
    corrupt[..64].fill(0xAB);
    let steps: [(&[u8], Option<&str>); 10] = [
        (&london, Some("eu-west")),
        (&truncated, None),
        (&corrupt, None),
        (&sydney, Some("ap-southeast-2")),
        (&asn, None),
        (&london, Some("eu-west")),
        (&truncated, None),
        (&sydney, Some("ap-southeast-2")),
        (&corrupt, None),
        (&london, Some("eu-west")),
    ];
    let mut current = "ap-southeast-2";
    for (step, (bytes, expected)) in steps.iter().enumerate() {
        let before = rejected_count(&app.get("/metrics").await.text);
        replace(&path, bytes);
        match expected {
            Some(region) => {
                app.wait_until(
                    20,
                    &format!("step {step}: answers switch to {region}"),
                    || async { app.select("8.8.8.8").await.json["region"] == *region },
                )
                .await;
                current = region;
            }
            None => {
                app.wait_until(20, &format!("step {step}: bad file refused"), || async {
                    rejected_count(&app.get("/metrics").await.text) > before
                })
                .await;
                assert_eq!(
                    app.select("8.8.8.8").await.json["region"],
                    current,
                    "step {step}"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "the load generator barely ran"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(
        app.log
            .lock()
            .expect("log")
            .contains("GeoIP database refused")
    );
}

/// Sends a room request's head and the first half of its body, leaving it in flight.
async fn start_slow_room(addr: &str) -> (TcpStream, String) {
    let body = json!({"user": {"id": "u", "name": "Slow"}, "client_ip": "81.2.69.142"}).to_string();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/rooms HTTP/1.1\r\nhost: geobridge\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let (first, rest) = body.split_at(body.len() / 2);
    stream
        .write_all(first.as_bytes())
        .await
        .expect("first half");
    (stream, rest.to_owned())
}

async fn finish_slow_room(mut stream: TcpStream, rest: String) -> String {
    stream
        .write_all(rest.as_bytes())
        .await
        .expect("rest of body");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.expect("answer");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// SIGTERM with 50 requests in flight: readiness turns false, new connections are refused,
/// all 50 complete with 201, and the process exits 0.
#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let options = Options::default()
        .env("GEOBRIDGE_SHUTDOWN_GRACE_MS", "60000")
        .env("GEOBRIDGE_REQUEST_TIMEOUT_MS", "60000");
    let mut app = spawn_app(options).await;
    let addr = app.addr();
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(start_slow_room(&addr).await);
    }
    app.wait_until(30, "50 requests in flight", || async {
        let metrics = app.get("/metrics").await.text;
        metrics
            .lines()
            .any(|l| l == "geobridge_http_requests_in_flight 50")
    })
    .await;
    app.signal("TERM");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answers = futures_join(slow).await;
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
    assert_eq!(app.wait_exit(30), Some(0));
    let log = app.log.lock().expect("log").clone();
    assert!(log.contains("all connections finished"), "{log}");
}

async fn futures_join(slow: Vec<(TcpStream, String)>) -> Vec<String> {
    let tasks: Vec<_> = slow
        .into_iter()
        .map(|(s, r)| tokio::spawn(finish_slow_room(s, r)))
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

/// Beyond the concurrency cap, requests get 503 with Retry-After; health stays reachable.
#[tokio::test]
async fn overload_is_refused_politely() {
    let options = Options::default()
        .env("GEOBRIDGE_MAX_CONCURRENT_REQUESTS", "2")
        .env("GEOBRIDGE_REQUEST_TIMEOUT_MS", "60000");
    let app = spawn_app(options).await;
    let addr = app.addr();
    let held = [start_slow_room(&addr).await, start_slow_room(&addr).await];
    // Both rooms must hold their slots before a selection asks for one: a selection taking
    // its slot for a moment between them would turn the second room away instead.
    app.wait_until(10, "both rooms in flight", || async {
        let metrics = app.get("/metrics").await.text;
        metrics.contains("\ngeobridge_http_requests_in_flight 2\n")
    })
    .await;
    app.wait_until(10, "overload answer", || async {
        let answer = app.select("8.8.8.8").await;
        answer.status == 503
    })
    .await;
    let request = app
        .http
        .get(format!("{}/v1/regions/select?ip=8.8.8.8", app.base));
    let response = request.send().await.expect("sent");
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(app.get("/healthz").await.status, 200);
    for (stream, rest) in held {
        assert!(
            finish_slow_room(stream, rest)
                .await
                .starts_with("HTTP/1.1 201")
        );
    }
    assert_eq!(app.select("8.8.8.8").await.status, 200);
}

/// A client that never finishes its request head is disconnected; huge heads are refused.
#[tokio::test]
async fn slow_and_huge_heads_are_cut_off() {
    let app = spawn_app(Options::default().env("GEOBRIDGE_HEADER_READ_TIMEOUT_MS", "300")).await;
    let mut stream = TcpStream::connect(app.addr()).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("partial head");
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
    let n = read
        .expect("server closed the slow connection")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");

    let mut stream = TcpStream::connect(app.addr()).await.expect("connect");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-junk: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert_eq!(
        app.get("/healthz").await.status,
        200,
        "the server is still fine"
    );
}

/// A GeoIP file damaged inside is served (its unreadable records as unknown places) and
/// reported: an error in the log and `geo_database_damaged` at 1 soon after start-up.
#[tokio::test]
async fn damaged_geo_database_is_reported_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("damaged.mmdb");
    crate::helpers::damaged_database(&path);
    let app =
        spawn_app(Options::default().env("GEOBRIDGE_GEO_DATABASE", path.to_str().expect("utf-8")))
            .await;
    app.wait_until(30, "damage reported", || async {
        app.get("/metrics")
            .await
            .text
            .contains("geobridge_geo_database_damaged 1")
    })
    .await;
    app.wait_until(10, "damage logged", || async {
        app.log.lock().expect("log").contains("is damaged")
    })
    .await;
    assert_eq!(app.select("81.2.69.142").await.status, 200);
}

/// A replacement that parses but places addresses nothing like the database in service (a
/// damaged file, or the wrong data) is refused; the shipped data keeps serving.
#[tokio::test]
async fn implausible_geo_database_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("geo.mmdb");
    let shipped = crate::helpers::repo_path("data/geobridge-city.mmdb");
    std::fs::copy(shipped, &path).expect("copy");
    let app = spawn_app(
        Options::default()
            .env("GEOBRIDGE_GEO_DATABASE", path.to_str().expect("utf-8"))
            .env("GEOBRIDGE_GEO_WATCH_MS", "50"),
    )
    .await;
    replace(&path, &database("GeoIP2-City", "AU", "OC", -33.87, 151.21));
    app.wait_until(30, "implausible file refused", || async {
        rejected_count(&app.get("/metrics").await.text) > 0
    })
    .await;
    assert_eq!(app.select("81.2.69.142").await.json["region"], "eu-west");
    assert!(app.log.lock().expect("log").contains("looks damaged"));
}
