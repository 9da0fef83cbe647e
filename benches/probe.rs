//! Probe load benchmark: one prober against 2,000 fake Videobridges, every 5 seconds.
//!
//! `cargo bench --bench probe` starts this binary again as a child that serves 2,000 fake
//! bridges on 127.0.0.1 (so their work is not counted), probes them over HTTP for 60 s in
//! all, and prints, for the last 45 s: probe lateness p99 (from the prober's own
//! `geobridge_probe_lateness_seconds` histogram, interpolated within its bucket as
//! Prometheus' `histogram_quantile` does) and the CPU the prober's process used, from
//! `getrusage`. Targets: p99 under 500 ms, under a third of one core. Under `cargo test` it
//! runs a two-second smoke version with 50 bridges instead.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::get;
use geobridge::catalog::{AdminState, Bridge, BridgeId, Catalog, Region, RegionId, Shard, Spec};
use geobridge::geo::Point;
use geobridge::metrics::Metrics;
use geobridge::probe::{self, HealthSnapshot, Prober};
use tokio::sync::watch;

const STATS: &str = include_str!("../tests/fixtures/jvb/stats-idle.json");

/// How big and how long a run is.
struct Plan {
    bridges: usize,
    interval_ms: u64,
    warm_up: Duration,
    measure: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve-fakes") {
        let count = args[at + 1].parse().expect("a bridge count");
        serve_fakes(count);
        return;
    }
    let plan = if args.iter().any(|a| a == "--bench") {
        Plan {
            bridges: 2000,
            interval_ms: 5000,
            warm_up: Duration::from_secs(15),
            measure: Duration::from_secs(45),
        }
    } else {
        Plan {
            bridges: 50,
            interval_ms: 200,
            warm_up: Duration::from_millis(500),
            measure: Duration::from_millis(1500),
        }
    };
    run(&plan);
}

/// Child: serves `count` fake bridges, prints their ports, stops when stdin closes.
fn serve_fakes(count: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let router = Router::new()
            .route("/about/health", get(|| async { "" }))
            .route("/colibri/stats", get(|| async { STATS }));
        let mut ports = Vec::with_capacity(count);
        for _ in 0..count {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            ports.push(listener.local_addr().expect("addr").port().to_string());
            let router = router.clone();
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        let mut out = std::io::stdout();
        writeln!(out, "PORTS {}", ports.join(",")).expect("stdout");
        out.flush().expect("stdout");
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await
        .expect("stdin watcher");
    });
}

fn run(plan: &Plan) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args(["--serve-fakes", &plan.bridges.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("fake bridges start");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ports line");
    let ports: Vec<u16> = line
        .trim()
        .trim_start_matches("PORTS ")
        .split(',')
        .map(|p| p.parse().expect("port"))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (lateness_p99, cpu) = runtime.block_on(measure(plan, &ports));
    drop(child.stdin.take());
    let _ = child.wait();
    println!(
        "probe: {} bridges every {} ms, measured over {:?}",
        plan.bridges, plan.interval_ms, plan.measure
    );
    println!(
        "probe lateness p99: {:.1} ms (target < 500 ms)",
        lateness_p99 * 1000.0
    );
    println!("prober CPU: {:.3} of one core (target < 0.333)", cpu);
}

/// Runs the prober; returns lateness p99 in seconds and CPU share over the measured window.
async fn measure(plan: &Plan, ports: &[u16]) -> (f64, f64) {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let config = probe::Config {
        interval_ms: plan.interval_ms,
        timeout_ms: plan.interval_ms * 3 / 4,
        ..probe::Config::default()
    };
    let prober = Prober {
        catalog: Arc::new(ArcSwap::from_pointee(catalog(ports))),
        health: Arc::new(ArcSwap::from_pointee(HealthSnapshot::default())),
        ready: Arc::new(AtomicBool::new(false)),
        config,
        metrics: metrics.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(prober.run(stopped));
    tokio::time::sleep(plan.warm_up).await;
    let (buckets_before, cpu_before, wall_before) =
        (buckets(&metrics), cpu_seconds(), Instant::now());
    tokio::time::sleep(plan.measure).await;
    let (buckets_after, cpu_after) = (buckets(&metrics), cpu_seconds());
    let wall = wall_before.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = task.await;
    let window: Vec<(f64, u64)> = buckets_after
        .iter()
        .zip(&buckets_before)
        .map(|(&(bound, after), &(_, before))| (bound, after - before))
        .collect();
    (quantile(0.99, &window), (cpu_after - cpu_before) / wall)
}

fn catalog(ports: &[u16]) -> Catalog {
    let region = RegionId::parse("bench").expect("id");
    let bridges = ports
        .iter()
        .enumerate()
        .map(|(i, port)| Bridge {
            id: BridgeId::parse(&format!("jvb-{i}")).expect("id"),
            region: region.clone(),
            url: format!("http://127.0.0.1:{port}"),
            weight: 1,
            stats: true,
            admin_state: AdminState::Active,
        })
        .collect();
    let spec = Spec {
        regions: vec![Region {
            id: region,
            name: String::new(),
            point: Point {
                latitude: 50.0,
                longitude: 8.0,
            },
            group: None,
            bias_km: 0.0,
            shard: None,
        }],
        bridges,
        shards: one_shard(),
        ..Spec::default()
    };
    Catalog::build(spec).expect("valid catalog")
}

/// One Jitsi shard for catalogs built in tests and benchmarks.
fn one_shard() -> Vec<Shard> {
    vec![Shard::single("https://meet.test")]
}

/// Cumulative counts per upper bound of the lateness histogram, `+Inf` last.
fn buckets(metrics: &Metrics) -> Vec<(f64, u64)> {
    use prometheus::core::Collector;
    let families = metrics.probe_lateness.collect();
    let histogram = families[0].get_metric()[0].get_histogram();
    let mut out: Vec<(f64, u64)> = histogram
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    out.push((f64::INFINITY, histogram.get_sample_count()));
    out
}

/// The `q` quantile of cumulative buckets, linear within the bucket that holds it.
fn quantile(q: f64, buckets: &[(f64, u64)]) -> f64 {
    let total = buckets.last().map_or(0, |b| b.1) as f64;
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        let count = count as f64;
        if count >= rank {
            if bound.is_infinite() {
                return lower.0;
            }
            let share = if count > lower.1 {
                (rank - lower.1) / (count - lower.1)
            } else {
                0.0
            };
            return lower.0 + (bound - lower.0) * share;
        }
        lower = (bound, count);
    }
    lower.0
}

/// User plus system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
