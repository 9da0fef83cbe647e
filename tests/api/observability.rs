//! What operators see: metrics checked by promtool, the alert rules and their unit tests, a
//! real Prometheus evaluating every dashboard and alert expression (logs: `logs.rs`).
//!
//! These tests need Debian's `prometheus` package (`prometheus` and `promtool`), which
//! ./scripts/test.sh installs; without it they fail rather than skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{App, Behaviour, FakeBridge, Options, fixture, repo_path, run, spawn_app};

const UK: &str = "81.2.69.142";
const US: &str = "8.8.8.8";

/// A tool of Debian's prometheus package; fails the test when it is missing.
fn tool(name: &str) -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed; ./scripts/test.sh installs Debian's prometheus package")
    })
}

/// A user for room requests.
pub fn user(id: &str) -> Value {
    json!({"id": id, "name": "Ada Lovelace", "email": "ada@example.com"})
}

/// The live /metrics of a geobridge that served rooms, lookups, errors and a strange method
/// passes `promtool check metrics`, and its labels hold no route path or method a client
/// made up, and no client address.
#[tokio::test]
async fn live_metrics_pass_promtool() {
    let bridge = FakeBridge::start().await;
    let app = spawn_app(Options::default().bridge("lon-1", "eu-west", &bridge.url)).await;
    wait_ready(&app).await;
    let created = app
        .create_room(&json!({"user": user("u-1"), "client_ip": UK}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(app.select("10.1.2.3").await.status, 200);
    assert_eq!(app.get("/no/such/path/4711").await.status, 404);
    let odd = reqwest::Method::from_bytes(b"FROBNICATE").expect("method");
    let odd = app.http.request(odd, format!("{}/v1/rooms", app.base));
    assert_eq!(app.send(odd).await.status, 405);
    let metrics = app.get("/metrics").await.text;

    let mut promtool = Command::new(tool("promtool"));
    promtool
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = promtool.spawn().expect("promtool runs");
    use std::io::Write;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(metrics.as_bytes()).expect("write metrics");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool ends");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool check metrics: {said}\n{metrics}"
    );
    assert!(said.trim().is_empty(), "promtool found problems: {said}");

    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    assert!(!metrics.contains("/no/such/path") && !metrics.contains("FROBNICATE"));
    assert!(
        !metrics.contains(UK) && !metrics.contains("10.1.2.3"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"geobridge_geo_lookups_total{outcome="located"} 1"#));
    assert!(metrics.contains(r#"geobridge_geo_lookups_total{outcome="private"} 1"#));
    assert!(metrics.contains("geobridge_token_signing_duration_seconds_count 1"));
    let eligible = r#"geobridge_region_eligible_bridges{region="eu-west"} 1"#;
    app.wait_until(20, "eu-west eligible in the metrics", || async {
        app.get("/metrics").await.text.contains(eligible)
    })
    .await;
}

/// The alert rules load, the sample scrape config is valid, and every alert's unit tests
/// (firing when it should, silent when it should not) pass under `promtool test rules`.
#[test]
fn alert_rules_pass_promtool() {
    let promtool = tool("promtool");
    let dir = repo_path("dashboards");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let (ok, out, err) = run(Command::new(&promtool).args(args).current_dir(&dir));
        assert!(ok, "promtool {args:?}:\n{out}\n{err}");
        assert!(out.contains("SUCCESS"), "promtool {args:?}:\n{out}\n{err}");
    }
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).expect("tests");
    for name in alert_names(&rules) {
        let tested = format!("alertname: {name}\n");
        assert!(
            tests.matches(&tested).count() >= 2,
            "{name} needs a firing and a silent case"
        );
    }
}

/// A Prometheus scraping geobridge every second, while fake bridges go from healthy to
/// unhealthy (panic decisions) to shutting down (refusals, 503s), returns data for every
/// expression of every dashboard panel, and for every alert expression with its final
/// threshold comparison removed; it loads the alert rules without errors. Each region state
/// change of the scenario is logged at info, and only changes are.
#[tokio::test]
async fn prometheus_evaluates_every_panel_and_alert() {
    let bridges = [
        FakeBridge::start().await,
        FakeBridge::start().await,
        FakeBridge::start().await,
    ];
    let options = Options {
        config: Some(three_regions()),
        ..Options::default()
    }
    .bridge("lon-1", "eu-west", &bridges[0].url)
    .bridge("fra-1", "eu-central", &bridges[1].url)
    .bridge("iad-1", "us-east", &bridges[2].url)
    .env("GEOBRIDGE_PROBE_RISE", "1")
    .env("GEOBRIDGE_PROBE_FALL", "1");
    let app = spawn_app(options).await;
    wait_ready(&app).await;
    let prometheus = Prometheus::start(&app.addr()).await;

    drive_healthy_traffic(&app).await;
    for bridge in &bridges {
        bridge.set(Behaviour::Unhealthy);
    }
    wait_region_state(&app, "none").await;
    let panic = app.select(UK).await;
    assert_eq!(panic.json["decision"]["tier"], "panic", "{}", panic.text);
    for bridge in &bridges {
        bridge.set(Behaviour::Healthy(fixture("stats-shutting-down.json")));
    }
    app.wait_until(20, "refusals", || async {
        app.select(UK).await.status == 503
    })
    .await;
    for bridge in &bridges {
        bridge.set(Behaviour::Healthy(fixture("stats-idle.json")));
    }
    wait_region_state(&app, "eligible").await;
    drive_healthy_traffic(&app).await;

    for expr in dashboard_exprs() {
        prometheus.wait_for_data(&expr, &app).await;
    }
    let rules = std::fs::read_to_string(repo_path("dashboards/alerts.yml")).expect("rules");
    for expr in alert_exprs(&rules) {
        prometheus
            .wait_for_data(&without_threshold(&expr), &app)
            .await;
    }
    prometheus
        .rules_are_healthy(alert_names(&rules).len())
        .await;

    let log = app.log.lock().expect("log lock").clone();
    let changes = region_changes(&log, "eu-west");
    for pair in changes.windows(2) {
        assert_eq!(
            pair[0].1, pair[1].0,
            "a change from a state not held: {changes:?}"
        );
    }
    for change in [("eligible", "none"), ("none", "eligible")] {
        let change = (change.0.to_owned(), change.1.to_owned());
        assert!(changes.contains(&change), "{change:?} not logged:\n{log}");
    }
    assert!(changes.iter().all(|(from, to)| from != to), "{changes:?}");
    assert!(log.contains("bridge state changed"), "{log}");
}

/// The (from, to) of every `region state changed` line of `region`, in order.
fn region_changes(log: &str, region: &str) -> Vec<(String, String)> {
    let field = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_owned())
    };
    log.lines()
        .filter(|line| line.contains("region state changed"))
        .filter(|line| field(line, "region").as_deref() == Some(region))
        .filter_map(|line| Some((field(line, "from")?, field(line, "to")?)))
        .collect()
}

/// Waits for /readyz: the first probe round is done.
pub async fn wait_ready(app: &App) {
    app.wait_until(20, "ready", || async {
        app.get("/readyz").await.status == 200
    })
    .await;
}

/// Waits until every region reports `state` in /v1/regions terms.
async fn wait_region_state(app: &App, state: &str) {
    let tier = |t: &str| match t {
        "eligible" => "eligible",
        _ => "panic",
    };
    let want = tier(state).to_owned();
    app.wait_until(20, state, || {
        let want = want.clone();
        async move {
            let regions = app.get("/v1/regions").await.json;
            let regions = regions.as_array().cloned().unwrap_or_default();
            !regions.is_empty() && regions.iter().all(|r| r["tier"] == want.as_str())
        }
    })
    .await;
}

/// Rooms, guests and lookups: located, private, pinned addresses, and an unknown route.
async fn drive_healthy_traffic(app: &App) {
    for (i, ip) in [UK, US, "10.0.0.1", "10.20.0.5"].iter().enumerate() {
        let answer = app
            .create_room(&json!({"user": user(&format!("u-{i}")), "client_ip": ip}))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        let room = answer.json["room"].as_str().expect("room").to_owned();
        let path = format!("{}/v1/rooms/{room}/participants", app.base);
        let guest = json!({"user": user("guest"), "client_ip": US});
        let joined = app.send(app.http.post(path).json(&guest)).await;
        assert_eq!(joined.status, 201, "{}", joined.text);
    }
    assert_eq!(app.get("/nowhere").await.status, 404);
}

/// Three regions, each with a bridge added by the test, a network pin and panic policy.
fn three_regions() -> String {
    let example = crate::helpers::example_config();
    let head = example.split("[[regions]]").next().expect("config head");
    let regions = r#"
[[regions]]
id = "eu-west"
name = "London"
latitude = 51.51
longitude = -0.13
group = "europe"

[[regions]]
id = "eu-central"
name = "Frankfurt"
latitude = 50.11
longitude = 8.68
group = "europe"

[[regions]]
id = "us-east"
name = "Ashburn"
latitude = 39.04
longitude = -77.49
group = "americas"

[pins]
networks = { "10.20.0.0/16" = "eu-central" }
"#;
    format!("{head}{regions}")
}

/// Every `expr` of the dashboard, with Grafana's interval variable made concrete.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo_path("dashboards/geobridge.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        titles,
        [
            "Traffic",
            "Decisions",
            "Regions and bridges",
            "GeoIP",
            "Tokens"
        ]
    );
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel without a query: {}",
            panel["title"]
        );
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            exprs.push(expr.replace("$__rate_interval", "1m"));
        }
    }
    let variables = &dashboard["templating"]["list"][0];
    assert_eq!(
        (&variables["type"], &variables["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );
    exprs
}

/// The `expr` of every alert rule, folded lines joined.
fn alert_exprs(rules: &str) -> Vec<String> {
    let parsed = yaml_values(rules, "expr");
    assert!(!parsed.is_empty());
    parsed
}

/// The name of every alert rule.
fn alert_names(rules: &str) -> Vec<String> {
    yaml_values(rules, "alert")
}

/// Values of `key:` in a YAML rules file: inline, or a `>-` block of deeper lines.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::new();
    let prefix = format!("{key}: ");
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(value) = trimmed.strip_prefix(&prefix) else {
            continue;
        };
        if value.trim() != ">-" {
            values.push(value.trim().to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim())
            .collect();
        values.push(block.join(" "));
    }
    values
}

/// The expression before its last top-level comparison (`> 0.1`, `== 0`, ...).
fn without_threshold(expr: &str) -> String {
    let bytes = expr.as_bytes();
    let (mut depth, mut quoted, mut cut) = (0i32, false, None);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'(' | b'{' | b'[' if !quoted => depth += 1,
            b')' | b'}' | b']' if !quoted => depth -= 1,
            b'>' | b'<' if !quoted && depth == 0 => cut = Some(i),
            b'=' if !quoted && depth == 0 && bytes.get(i + 1) == Some(&b'=') => cut = Some(i),
            _ => {}
        }
    }
    let cut = cut.unwrap_or_else(|| panic!("no threshold comparison in {expr}"));
    let left = expr[..cut].trim_end_matches(['!', '=', ' ']);
    left.trim().to_owned()
}

/// A Prometheus server on loopback, in its own temp dir, killed by pid when dropped.
struct Prometheus {
    base: String,
    http: reqwest::Client,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second and evaluating the alert rules.
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = repo_path("dashboards/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: geobridge\n    static_configs:\n\
             \x20     - targets: ['{target}']\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child,
            dir,
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let ready = self.http.get(format!("{}/-/ready", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not get ready:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query and returns its result list.
    async fn query(&self, expr: &str) -> Value {
        let url = format!("{}/api/v1/query?query={}", self.base, percent_encode(expr));
        let response = self.http.get(url).send().await;
        let body: Value = response
            .expect("query sent")
            .json()
            .await
            .expect("query JSON");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"].clone()
    }

    /// Polls `expr` until it returns at least one series, failing after a deadline.
    async fn wait_for_data(&self, expr: &str, app: &App) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if self
                .query(expr)
                .await
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let metrics = app.get("/metrics").await.text;
        panic!("no data for {expr}\nmetrics:\n{metrics}");
    }

    /// Every rule of the alerts file is loaded and evaluates without error.
    async fn rules_are_healthy(&self, count: usize) {
        let url = format!("{}/api/v1/rules", self.base);
        let body: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("rules")
            .json()
            .await
            .expect("JSON");
        let groups = body["data"]["groups"].as_array().expect("groups");
        let rules: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").iter())
            .collect();
        assert_eq!(rules.len(), count, "{body}");
        for rule in rules {
            assert_ne!(rule["health"], "err", "{rule}");
        }
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `text` with every byte but unreserved ones percent-encoded, for a query string.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
