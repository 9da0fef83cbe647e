//! Wiring for `serve`: load what the settings name, start the prober, serve, shut down.
//!
//! Everything that can be wrong with the deployment (settings, GeoIP file, key file) is found
//! before a port is bound and reported together. On SIGINT or SIGTERM the listener stops
//! accepting, requests in flight finish, and the prober is stopped and awaited. On SIGHUP,
//! [`reload`] reads credentials, the GeoIP file, the settings file and key files again; each
//! part that fails keeps what is in service, and a request in flight keeps the signer it
//! started with.
//!
//! Connections start on the plain HTTP/1.1 loop of [`plain`], which answers selections
//! itself and hands everything else to hyper and the router (`http`).

mod http;
mod observe;
pub mod plain;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::Instrument;

use std::time::Duration;

use crate::api::{self, AppState, Credentials};
use crate::config::{Auth, Problems, Settings};
use crate::geo::{Database, Geo};
use crate::metrics::Metrics;
use crate::probe::{HealthSnapshot, Prober};
use crate::select::{self, Ledger};
use crate::store::{self, Store};
use crate::token::{self, Keyring, Signer};

/// Addresses compared between the GeoIP database in service and its replacement.
const GEO_SAMPLES: usize = 4000;

/// How often expired rooms are deleted.
const ROOM_PURGE_EVERY: Duration = Duration::from_secs(60);

/// Key size `serve` generates when no key file is configured.
const GENERATED_KEY_BITS: usize = 4096;

/// Loads the GeoIP database, the signing key, the credentials and the store, collecting
/// every problem; nothing is listening yet.
pub async fn prepare(settings: &Settings) -> Result<Arc<AppState>, Problems> {
    let mut problems = Vec::new();
    // The GeoIP file is read on a blocking thread while the store opens: reading 50 MB and
    // waiting for the store's first fsyncs overlap instead of adding up.
    let path = settings.geo.database.clone();
    let geo = tokio::task::spawn_blocking(move || Database::open(&path));
    let signer = signer(settings).map_err(|found| problems.extend(found));
    let metrics = Metrics::new().map_err(|e| problems.push(format!("metrics: {e}")));
    let credentials = Credentials::load(&settings.server).map_err(|e| problems.extend(e));
    let store = open_store(settings).await.map_err(|e| problems.push(e));
    let geo = match geo.await {
        Ok(opened) => opened.map_err(|e| e.to_string()),
        Err(error) => Err(format!("GeoIP database: {error}")),
    }
    .map_err(|problem| problems.insert(0, problem));
    let (Ok(geo), Ok(signer), Ok(metrics), Ok(credentials), Ok(store)) =
        (geo, signer, metrics, credentials, store)
    else {
        // The signing key and the store both live in the state dir: one problem, once.
        let mut seen = std::collections::HashSet::new();
        problems.retain(|problem| seen.insert(problem.clone()));
        return Err(Problems(problems));
    };
    let build = i64::try_from(geo.info().build_epoch).unwrap_or(0);
    metrics.geo_build_time.set(build);
    let series = api::fast::Series::new(&metrics);
    let state = Arc::new(AppState {
        geo: Arc::new(Geo::new(geo)),
        catalog: Arc::new(ArcSwap::from_pointee(settings.catalog.clone())),
        health: Arc::new(ArcSwap::from_pointee(HealthSnapshot::default())),
        signer: Arc::new(ArcSwap::from_pointee(signer)),
        metrics: Arc::new(metrics),
        ready: Arc::new(AtomicBool::new(false)),
        shutting_down: AtomicBool::new(false),
        in_flight: api::InFlight::new(settings.server.max_concurrent_requests),
        credentials: ArcSwap::from_pointee(credentials),
        jitsi: settings.jitsi.clone(),
        policy: settings.policy.clone(),
        survey: select::Cache::default(),
        reservations: Mutex::new(Ledger::new(Duration::from_secs(
            settings.policy.reservation_seconds,
        ))),
        store,
        series,
        settings: Arc::new(settings.clone()),
    });
    let registry = state
        .store
        .registry()
        .await
        .map_err(|e| Problems(vec![e.to_string()]))?;
    let catalog = state.catalog_from(&registry).map_err(Problems)?;
    state.ready.store(
        catalog.bridges().is_empty(),
        std::sync::atomic::Ordering::Release,
    );
    state.catalog.store(Arc::new(catalog));
    Ok(state)
}

/// Opens the configured store (SQLite in the state dir by default) and seeds it with the
/// config file's regions and bridges.
async fn open_store(settings: &Settings) -> Result<Store, String> {
    let url = match &settings.store.url {
        Some(url) => url.expose().to_owned(),
        None => {
            let dir = &settings.server.state_dir;
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("state dir '{}': {e}", dir.display()))?;
            store::sqlite_url(dir)
        }
    };
    let store = Store::open(&url).await.map_err(|e| match e {
        // These name the setting themselves.
        store::Error::BadUrl(_) | store::Error::Connect { .. } => e.to_string(),
        other => format!("store: {other}"),
    })?;
    store
        .seed(&settings.regions, &settings.bridges)
        .await
        .map_err(|e| format!("store: {e}"))?;
    Ok(store)
}

/// Follows registry changes made by other instances and purges expired rooms.
async fn keep_in_sync(state: Arc<AppState>, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut seen = state.store.version().await.unwrap_or(-1);
    let mut purged_at = tokio::time::Instant::now();
    // Since when the store has not answered, if it has not.
    let mut lost_at = None;
    state.metrics.store_up.set(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => break,
        }
        let version = state.store.version().await;
        lost_at = store_standing(&state, version.as_ref().err(), lost_at);
        if let Ok(version) = version
            && version != seen
        {
            seen = version;
            state.refresh_catalog().await;
            tracing::debug!(version, "registry changed; catalog refreshed");
        }
        if purged_at.elapsed() >= ROOM_PURGE_EVERY {
            purged_at = tokio::time::Instant::now();
            match state.store.purge_rooms(store::now_seconds()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rooms = n, "expired rooms purged"),
                Err(error) => tracing::warn!(%error, "expired rooms could not be purged"),
            }
        }
    }
}

/// Shows whether the store answered the last poll (`store_up`), logging only the changes:
/// a warning when it stops answering, with the error, and when it answers again, after how
/// long. Returns since when it has not answered.
fn store_standing(
    state: &AppState,
    error: Option<&store::Error>,
    lost_at: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    state.metrics.store_up.set(i64::from(error.is_none()));
    match (error, lost_at) {
        (Some(error), None) => {
            tracing::warn!(%error, "the database cannot be reached; writes get 503 until it is");
            Some(tokio::time::Instant::now())
        }
        (Some(error), Some(since)) => {
            tracing::debug!(%error, "the database still cannot be reached");
            Some(since)
        }
        (None, Some(since)) => {
            let seconds = since.elapsed().as_secs();
            tracing::info!(seconds, "the database can be reached again");
            None
        }
        (None, None) => None,
    }
}

/// Everything `prepare` would refuse, found without side effects (no key is generated, no
/// database is created): for `check-config`.
pub fn check(settings: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(error) = Database::open_verified(&settings.geo.database) {
        problems.push(error.to_string());
    }
    if settings.jitsi.auth == Auth::Rs256 {
        let sources = settings.key_sources();
        let generated = settings.jitsi.key_file.is_none() && settings.jitsi.keys.is_empty();
        if (!generated || sources[0].file.exists())
            && let Err(found) = Keyring::load(&sources)
        {
            problems.extend(found);
        }
    }
    if let Err(found) = Credentials::load(&settings.server) {
        problems.extend(found);
    }
    problems.extend(state_dir_problem(&settings.server.state_dir));
    let url = settings.store.url.as_ref().map(|url| url.expose());
    if let Some(problem) = url.and_then(store::url_problem) {
        problems.push(format!("store.url: {problem}"));
    }
    problems
}

/// Why `dir` could not be used as the state dir, found without creating anything: the
/// nearest part of it that exists must be a directory.
fn state_dir_problem(dir: &Path) -> Option<String> {
    let mut part = dir;
    loop {
        match std::fs::metadata(part) {
            Ok(found) if found.is_dir() => return None,
            Ok(_) => {
                let (dir, part) = (dir.display(), part.display());
                return Some(format!("state dir '{dir}': '{part}' is not a directory"));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                part = part.parent().filter(|p| !p.as_os_str().is_empty())?;
            }
            Err(error) => return Some(format!("state dir '{}': {error}", dir.display())),
        }
    }
}

/// The signer the settings ask for; generates the RS256 key on first start when none is set.
fn signer(settings: &Settings) -> Result<Signer, Vec<String>> {
    match settings.jitsi.auth {
        Auth::None => {
            tracing::warn!("jitsi.auth is none: links carry no token; only for a public Jitsi");
            Ok(Signer::None)
        }
        Auth::Hs256 => {
            let secret = settings
                .jitsi
                .app_secret
                .as_ref()
                .map_or("", |s| s.expose());
            Ok(Signer::hs256(secret.as_bytes()))
        }
        Auth::Rs256 => {
            let sources = settings.key_sources();
            let generated = settings.jitsi.key_file.is_none() && settings.jitsi.keys.is_empty();
            if generated && !sources[0].file.exists() {
                generate_key(&sources[0].file).map_err(|e| vec![e])?;
            }
            for source in &sources {
                warn_if_readable_by_others(&source.file);
            }
            let keys = Keyring::load(&sources)?;
            log_keys(&keys);
            Ok(Signer::Rs256(keys))
        }
    }
}

fn log_keys(keys: &Keyring) {
    let signing = keys.signing().kid();
    for key in keys.keys() {
        let (kid, bits, fingerprint) = (key.kid(), key.bits(), key.fingerprint());
        let signs = key.kid() == signing;
        tracing::info!(%kid, bits, %fingerprint, signs, "key published");
    }
}

fn generate_key(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("state dir '{}': {e}", dir.display()))?;
    }
    tracing::info!(path = %path.display(), bits = GENERATED_KEY_BITS, "generating a signing key");
    let pem = token::generate_pem(GENERATED_KEY_BITS)?;
    token::write_private_pem(path, &pem).map_err(|e| e.to_string())
}

fn warn_if_readable_by_others(path: &Path) {
    if token::readable_by_others(path) {
        let path = path.display();
        tracing::warn!(%path, "key file is readable by other users; chmod 600 it");
    }
}

/// Serves until SIGINT or SIGTERM, then drains and stops every background task.
pub async fn serve(settings: Settings, state: Arc<AppState>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.server.listen).await?;
    let addr = listener.local_addr()?;
    // SIGHUP is taken before the listener is announced, so an early one reloads instead of
    // ending the process.
    let hangups = hangup_signals();
    tracing::info!(%addr, "listening on http://{addr}");
    let (stop, stopped) = watch::channel(false);
    let prober = Prober {
        catalog: state.catalog.clone(),
        health: state.health.clone(),
        ready: state.ready.clone(),
        config: settings.probe.clone(),
        metrics: state.metrics.clone(),
    };
    let span = tracing::info_span!("prober");
    let probing = tokio::spawn(prober.run(stopped.clone()).instrument(span));
    let poll = Duration::from_millis(settings.store.poll_ms);
    let span = tracing::info_span!("sync");
    let syncing = tokio::spawn(keep_in_sync(state.clone(), poll, stopped.clone()).instrument(span));
    let span = tracing::info_span!("reload");
    let reloading = watch_for_reloads(state.clone(), hangups, stopped.clone());
    let reloading = tokio::spawn(reloading.instrument(span));
    let span = tracing::info_span!("observe");
    let observing = tokio::spawn(observe::follow(state.clone(), stopped).instrument(span));
    tokio::spawn(verify_geo(state.clone()));
    let server = &settings.server;
    let limits = http::Limits {
        header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
        max_header_bytes: server.max_header_bytes,
        grace: Duration::from_millis(server.shutdown_grace_ms),
        write_timeout: Duration::from_millis(server.request_timeout_ms),
        // Long enough for a request to be answered and the next head to start arriving.
        idle_timeout: Duration::from_millis(server.request_timeout_ms)
            + Duration::from_millis(server.header_read_timeout_ms),
    };
    let draining = state.clone();
    let stop_serving = async move {
        shutdown_signal().await;
        // Readiness goes false first, so load balancers stop sending before we stop listening.
        draining
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
    };
    let router = api::router(state.clone());
    http::serve(listener, state.clone(), router, limits, stop_serving).await;
    tracing::info!("stopping background tasks");
    let _ = stop.send(true);
    probing.await?;
    syncing.await?;
    reloading.await?;
    observing.await?;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads what may change without a restart: the credential files, the signing keys and
/// the GeoIP file. The one entry point SIGHUP calls.
pub async fn reload(state: &AppState) {
    match Credentials::load(&state.settings.server) {
        Ok(credentials) => {
            state.credentials.store(Arc::new(credentials));
            state
                .metrics
                .credential_reloads
                .with_label_values(&["loaded"])
                .inc();
            tracing::info!("credentials reloaded");
        }
        Err(problems) => {
            let problems = problems.join("; ");
            state
                .metrics
                .credential_reloads
                .with_label_values(&["rejected"])
                .inc();
            tracing::error!(
                problems,
                "credentials not reloaded; the old ones stay in service"
            );
        }
    }
    reload_keys(state).await;
    reload_geo(state).await;
}

/// Reads the settings file and the key files again and swaps in the new signer; on any
/// problem (unreadable key, bad settings, a kid given another key) the signer in service
/// stays, and the problem is logged and counted.
///
/// Known limit: of the settings file, only the token signer is taken; other settings need a
/// restart.
pub async fn reload_keys(state: &AppState) -> bool {
    let (settings, current) = (state.settings.clone(), state.signer.load_full());
    let next = tokio::task::spawn_blocking(move || next_signer(&settings, &current)).await;
    let reloads = &state.metrics.key_reloads;
    let problems = match next {
        Ok(Ok(signer)) => {
            state.signer.store(Arc::new(signer));
            reloads.with_label_values(&["loaded"]).inc();
            tracing::info!("signing keys reloaded");
            return true;
        }
        Ok(Err(problems)) => problems.to_string(),
        Err(join) => join.to_string(),
    };
    reloads.with_label_values(&["rejected"]).inc();
    tracing::error!(problems, "keys not reloaded; the keys in service stay");
    false
}

/// The signer the settings file asks for now, if it may follow `current`.
fn next_signer(settings: &Settings, current: &Signer) -> Result<Signer, Problems> {
    let next = settings.reload()?;
    let signer = signer(&next).map_err(Problems)?;
    if let (Some(old), Some(new)) = (current.keyring(), signer.keyring()) {
        old.check_successor(new).map_err(|e| Problems(vec![e]))?;
    }
    Ok(signer)
}

/// Walks the whole GeoIP database in service once, after start-up (a full check would take
/// longer than start-up may). A damaged file keeps serving, its unreadable records as
/// unknown places, and says so in the log and in `geo_database_damaged` until a good file
/// replaces it.
async fn verify_geo(state: Arc<AppState>) {
    let database = state.geo.current();
    let checking = database.clone();
    let checked = tokio::task::spawn_blocking(move || checking.verify()).await;
    // A file swapped in meanwhile was checked fully before it was.
    let in_service = Arc::ptr_eq(&database, &state.geo.current());
    if let (Ok(Err(error)), true) = (checked, in_service) {
        state.metrics.geo_damaged.set(1);
        tracing::error!(
            %error,
            "GeoIP database in service is damaged: some addresses will have no location; \
             replace the file (a new one is read when it changes)"
        );
    }
}

/// Opens and fully verifies the GeoIP file, then swaps it in; a bad file is refused and the
/// database in service stays.
pub async fn reload_geo(state: &AppState) -> bool {
    let path = state.settings.geo.database.clone();
    let (current, needed) = (state.geo.current(), state.settings.geo.min_agreement);
    let opened = tokio::task::spawn_blocking(move || {
        let database = Database::open_verified(&path)?;
        let agreement = current.agreement(&database, GEO_SAMPLES);
        if agreement < needed {
            return Err(crate::geo::Error::Implausible {
                path,
                agreement,
                needed,
            });
        }
        Ok(database)
    })
    .await;
    let reloads = &state.metrics.geo_reloads;
    match opened {
        Ok(Ok(database)) => {
            let info = database.info().clone();
            state
                .metrics
                .geo_build_time
                .set(i64::try_from(info.build_epoch).unwrap_or(0));
            state.geo.replace(database);
            state.metrics.geo_damaged.set(0);
            reloads.with_label_values(&["loaded"]).inc();
            let (path, build_epoch) = (info.path.display(), info.build_epoch);
            tracing::info!(%path, build_epoch, "GeoIP database reloaded");
            true
        }
        Ok(Err(error)) => {
            reloads.with_label_values(&["rejected"]).inc();
            tracing::error!(%error, "GeoIP database refused; the one in service stays");
            false
        }
        Err(join) => {
            reloads.with_label_values(&["rejected"]).inc();
            tracing::error!(error = %join, "GeoIP reload failed; the one in service stays");
            false
        }
    }
}

/// Reloads on SIGHUP, and when the GeoIP file is replaced, until `stop` turns true.
async fn watch_for_reloads(
    state: Arc<AppState>,
    mut hangups: Hangups,
    mut stop: watch::Receiver<bool>,
) {
    let path = state.settings.geo.database.clone();
    let watch_ms = state.settings.geo.watch_ms;
    let every = Duration::from_millis(if watch_ms == 0 { 3_600_000 } else { watch_ms });
    // The file as it was read, not as it is once this task first runs: a replacement in
    // between must count as a change.
    let mut seen = state.geo.current().signature();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {
                let now = crate::geo::signature(&path);
                if watch_ms > 0 && now.is_some() && now != seen {
                    // A file still being written changes again; it is retried when it does.
                    seen = now;
                    reload_geo(&state).await;
                }
            }
            () = next_hangup(&mut hangups) => {
                seen = crate::geo::signature(&path);
                reload(&state).await;
            }
            _ = stop.changed() => break,
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangup_signals() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup()).ok();
        if hangups.is_none() {
            tracing::warn!("SIGHUP cannot be watched; reloading needs a restart");
        }
        hangups
    }
    #[cfg(not(unix))]
    None
}

async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(signals) = hangups
        && signals.recv().await.is_some()
    {
        return;
    }
    let _ = hangups;
    std::future::pending::<()>().await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received");
}

/// What `geobridge prosody-config` prints for these settings.
pub fn prosody_config(
    settings: &Settings,
    key_server: Option<String>,
    domain: Option<String>,
) -> String {
    use crate::token::{ProsodyHost, Verification};
    let jitsi = &settings.jitsi;
    let verification = match jitsi.auth {
        Auth::Rs256 => Verification::KeyServer(
            key_server.unwrap_or_else(|| format!("http://{}/asap", settings.server.listen)),
        ),
        Auth::Hs256 => Verification::SharedSecret,
        Auth::None => Verification::None,
    };
    let host_of_url = || {
        let rest = jitsi
            .url
            .split_once("://")
            .map_or(&*jitsi.url, |(_, rest)| rest);
        rest.split(['/', ':']).next().unwrap_or(rest).to_owned()
    };
    token::prosody_config(&ProsodyHost {
        domain: domain.unwrap_or_else(host_of_url),
        app_id: jitsi.issuer.clone(),
        audience: jitsi.audience.clone(),
        verification,
    })
}

/// What `geobridge lookup` prints for one address, assuming every bridge is healthy.
pub fn describe(settings: &Settings, database: &Database, ip: std::net::IpAddr) -> String {
    use crate::geo::Lookup;
    use crate::select::{self, Client};
    let lookup = database.lookup(ip);
    let (place, location) = match &lookup {
        Lookup::Located(l) => (place_text(l), Some(l)),
        Lookup::NoData => ("no data in the GeoIP database".to_owned(), None),
        Lookup::Special(class) => (format!("no location ({class:?} address)"), None),
    };
    let health = HealthSnapshot::all_up(&settings.catalog);
    let client = Client {
        ip: Some(ip),
        location,
    };
    let choice = match select::select(client, &settings.catalog, &health, &settings.policy) {
        Ok(d) => {
            let km = d
                .distance_km
                .map_or_else(String::new, |k| format!(", {k:.0} km"));
            format!("{} ({}{km})", d.region, d.reason.label())
        }
        Err(refusal) => format!("none: {refusal}"),
    };
    format!("{ip}\t{place}\t-> {choice}")
}

fn place_text(l: &crate::geo::Location) -> String {
    let code = |c: Option<crate::geo::CountryCode>| c.map_or("??".to_owned(), |c| c.to_string());
    let mut text = format!("{}/{}", code(l.continent), code(l.country));
    if let Some(s) = &l.subdivision {
        text.push_str(&format!(" {s}"));
    }
    if let Some(p) = l.point {
        text.push_str(&format!(" ({:.2}, {:.2})", p.latitude, p.longitude));
    }
    if l.coarse {
        text.push_str(" coarse");
    }
    text
}
