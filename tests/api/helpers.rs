//! Test harness: the real `geobridge` binary as a child process on 127.0.0.1:0, fake
//! Videobridges as small axum servers on port 0, and one helper per endpoint.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;

/// The example configuration the tests start from.
pub fn example_config() -> String {
    std::fs::read_to_string(repo_path("data/geobridge.example.toml")).expect("example config")
}

/// A path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A copy of the shipped GeoIP database at `path` with 4 MiB of its search tree overwritten
/// by pseudo-random bytes: it still opens, but a full check finds the damage.
pub fn damaged_database(path: &Path) {
    let mut bytes = std::fs::read(repo_path("data/geobridge-city.mmdb")).expect("shipped");
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for byte in &mut bytes[10 << 20..14 << 20] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(path, bytes).expect("write damaged copy");
}

/// A stats fixture from `tests/fixtures/jvb`.
pub fn fixture(name: &str) -> String {
    let path = repo_path(&format!("tests/fixtures/jvb/{name}"));
    std::fs::read_to_string(path).expect("fixture")
}

/// How to start geobridge.
#[derive(Default)]
pub struct Options {
    /// Text appended to the example configuration (bridges, pins, ...).
    pub extra_toml: String,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Replace the example configuration entirely.
    pub config: Option<String>,
}

impl Options {
    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Options {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Registers a bridge in the config.
    pub fn bridge(mut self, id: &str, region: &str, url: &str) -> Options {
        self.extra_toml.push_str(&format!(
            "\n[[bridges]]\nid = \"{id}\"\nregion = \"{region}\"\nurl = \"{url}\"\n"
        ));
        self
    }
}

/// A running geobridge.
pub struct App {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Holds the config, state dir and key files.
    pub dir: tempfile::TempDir,
    /// Everything the process logged so far.
    pub log: Arc<Mutex<String>>,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The admin credential it was started with, if any.
    pub admin: String,
    child: Child,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `geobridge` command with a clean environment.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_geobridge"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GEOBRIDGE_") || key.starts_with("JITSI_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
}

/// Starts geobridge with `options` and waits until it listens.
pub async fn spawn_app(options: Options) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = options.config.clone().unwrap_or_else(example_config) + &options.extra_toml;
    let config_path = dir.path().join("geobridge.toml");
    std::fs::write(&config_path, config).expect("write config");
    let mut command = command();
    command
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
        .env("GEOBRIDGE_STATE_DIR", dir.path().join("state"))
        .env(
            "GEOBRIDGE_GEO_DATABASE",
            repo_path("data/geobridge-city.mmdb"),
        )
        .env("GEOBRIDGE_PROBE_INTERVAL_MS", "200")
        .env("GEOBRIDGE_PROBE_TIMEOUT_MS", "150")
        .env("GEOBRIDGE_PROBE_HOLD_DOWN_MS", "300")
        .env("RUST_LOG", "info,geobridge=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in &options.env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("geobridge starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let end = |c: &char| c.is_whitespace() || *c == '"';
                let addr: String = rest.chars().take_while(|c| !end(c)).collect();
                let _ = tx.send(addr);
            }
            let mut log = sink.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "geobridge did not start; log:\n{}",
                log.lock().expect("log lock")
            )
        });
    let admin = options
        .env
        .iter()
        .find(|(k, _)| k == "GEOBRIDGE_ADMIN_CREDENTIALS");
    let admin = admin.map(|(_, v)| v.split(',').next().unwrap_or_default().to_owned());
    let admin = admin.unwrap_or_default();
    let http = reqwest::Client::new();
    App {
        base: format!("http://{addr}"),
        dir,
        log,
        http,
        admin,
        child,
    }
}

/// A decoded answer.
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Body as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
    /// Body as text.
    pub text: String,
    /// The `Retry-After` header, when sent.
    pub retry_after: Option<String>,
}

impl App {
    /// GET a path.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `GET /v1/regions/select?ip=`.
    pub async fn select(&self, ip: &str) -> Answer {
        self.get(&format!("/v1/regions/select?ip={}", urlencode(ip)))
            .await
    }

    /// `POST /v1/rooms` with a JSON body.
    pub async fn create_room(&self, body: &Value) -> Answer {
        let request = self.http.post(format!("{}/v1/rooms", self.base)).json(body);
        self.send(request).await
    }

    /// Sends any request and decodes the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("a text header").to_owned());
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            json,
            text,
            retry_after,
        }
    }

    /// Polls `check` every 50 ms until it returns true, for at most `secs` seconds.
    pub async fn wait_until<F, Fut>(&self, secs: u64, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}; log:\n{}",
            self.log.lock().expect("log lock")
        );
    }

    /// The configuration file the app was started with; rewrite it, then `hangup`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("geobridge.toml")
    }

    /// The health entry of one bridge from `GET /v1/regions`.
    pub async fn bridge_health(&self, id: &str) -> Value {
        let request = self.authed(reqwest::Method::GET, "/v1/regions", &self.admin);
        let regions = self.send(request).await.json;
        for region in regions.as_array().expect("regions array") {
            for bridge in region["bridges"].as_array().expect("bridges array") {
                if bridge["id"] == id {
                    return bridge["health"].clone();
                }
            }
        }
        panic!("bridge {id} not listed")
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How a fake bridge answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 on health, these stats.
    Healthy(String),
    /// 500 on health.
    Unhealthy,
    /// Never answers.
    Hang,
    /// 200 on health, stats that are not JSON.
    Garbage,
    /// 200 on health; stats send their headers and then nothing, forever.
    HangAfterHeaders,
    /// 200 on health; 50 MB of stats, streamed with no length announced.
    Huge,
    /// 200 on health; 404 for stats (the bridge's REST API is off).
    NoStats,
    /// 302 to the same path at this base URL, for health and stats.
    Redirect(String),
}

/// A fake Videobridge on 127.0.0.1:0.
pub struct FakeBridge {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Requests to `/about/health` so far.
    pub health_hits: Arc<std::sync::atomic::AtomicU64>,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBridge {
    /// Starts a bridge that answers healthy with the idle stats fixture.
    pub async fn start() -> FakeBridge {
        let behaviour = Arc::new(Mutex::new(Behaviour::Healthy(fixture("stats-idle.json"))));
        let health = behaviour.clone();
        let stats = behaviour.clone();
        let health_hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hits = health_hits.clone();
        let router = Router::new()
            .route(
                "/about/health",
                get(move || {
                    hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    answer_health(health.clone())
                }),
            )
            .route("/colibri/stats", get(move || answer_stats(stats.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeBridge {
            url,
            health_hits,
            behaviour,
            task,
        }
    }

    /// Changes how it answers from now on.
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("behaviour lock") = behaviour;
    }
}

async fn answer_health(behaviour: Arc<Mutex<Behaviour>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let current = behaviour.lock().expect("behaviour lock").clone();
    match current {
        Behaviour::Unhealthy => (StatusCode::INTERNAL_SERVER_ERROR, "ice failed").into_response(),
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Redirect(to) => redirect(&to, "/about/health"),
        _ => (StatusCode::OK, String::new()).into_response(),
    }
}

fn redirect(base: &str, path: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let location = [(axum::http::header::LOCATION, format!("{base}{path}"))];
    (StatusCode::FOUND, location).into_response()
}

async fn answer_stats(behaviour: Arc<Mutex<Behaviour>>) -> axum::response::Response {
    use axum::body::Body;
    use axum::response::IntoResponse;
    use futures_util::{StreamExt, stream};
    let current = behaviour.lock().expect("behaviour lock").clone();
    match current {
        Behaviour::Healthy(stats) => (StatusCode::OK, stats).into_response(),
        Behaviour::Garbage => (StatusCode::OK, "{not json".to_owned()).into_response(),
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Unhealthy => (StatusCode::OK, fixture("stats-idle.json")).into_response(),
        Behaviour::NoStats => (StatusCode::NOT_FOUND, "").into_response(),
        Behaviour::Redirect(to) => redirect(&to, "/colibri/stats"),
        Behaviour::HangAfterHeaders => {
            let start = b"{\"stress_level\":".to_vec();
            let first = stream::once(async move { Ok::<_, std::io::Error>(start) });
            let body = Body::from_stream(first.chain(stream::pending()));
            (StatusCode::OK, body).into_response()
        }
        Behaviour::Huge => {
            // 800 chunks of 64 KiB: about 50 MB, valid JSON never closed.
            let chunk = vec![b' '; 64 * 1024];
            let chunks = (0..800).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
            let body = Body::from_stream(stream::iter(chunks));
            (StatusCode::OK, body).into_response()
        }
    }
}

/// Base64url without padding, decoded.
pub fn b64url(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// Runs a command and returns (status ok, stdout, stderr).
pub fn run(command: &mut Command) -> (bool, String, String) {
    let out = command.output().expect("command runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

impl App {
    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGHUP (reload).
    pub fn hangup(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// A request with a bearer credential.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        if bearer.is_empty() {
            request
        } else {
            request.bearer_auth(bearer)
        }
    }
}

/// The PostgreSQL server the tests use; scripts/test.sh starts one and sets the variable.
pub fn postgres_server() -> String {
    std::env::var("GEOBRIDGE_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "GEOBRIDGE_TEST_POSTGRES is not set: these tests need a PostgreSQL server; \
             run ./scripts/test.sh, which starts one"
        )
    })
}

/// A new, empty database on the test server; returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let server = postgres_server();
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&server)
        .await
        .expect("postgres reachable");
    let name = format!("geobridge_test_{:016x}", rand_u64());
    let create = format!("CREATE DATABASE {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base)
        .to_owned();
    format!("{base}/{name}")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

impl App {
    /// Sends a signal by name (`TERM`, `INT`, `HUP`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(status.expect("kill runs").success());
    }

    /// Waits for the process to exit, at most `secs` seconds, and returns its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "geobridge did not exit; log:\n{}",
            self.log.lock().expect("log lock")
        )
    }

    /// `host:port` of the listener.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }
}
