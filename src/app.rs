//! Wiring for `serve`: load what the settings name, start the prober, serve, shut down.
//!
//! Everything that can be wrong with the deployment (settings, GeoIP file, key file) is found
//! before a port is bound and reported together. On SIGINT or SIGTERM the listener stops
//! accepting, requests in flight finish, and the prober is stopped and awaited.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::Instrument;

use crate::api::{self, AppState};
use crate::config::{Auth, Problems, Settings};
use crate::geo::{Database, Geo};
use crate::metrics::Metrics;
use crate::probe::{HealthSnapshot, Prober};
use crate::select::{self, Ledger};
use crate::token::{self, RsaKey, Signer};

/// Key size `serve` generates when no key file is configured.
const GENERATED_KEY_BITS: usize = 4096;

/// Loads the GeoIP database and the signing key, collecting every problem.
pub fn prepare(settings: &Settings) -> Result<Arc<AppState>, Problems> {
    let mut problems = Vec::new();
    let geo = Database::open(&settings.geo.database).map_err(|e| problems.push(e.to_string()));
    let signer = signer(settings).map_err(|e| problems.push(e));
    let metrics = Metrics::new().map_err(|e| problems.push(format!("metrics: {e}")));
    let (Ok(geo), Ok(signer), Ok(metrics)) = (geo, signer, metrics) else {
        return Err(Problems(problems));
    };
    let build = i64::try_from(geo.info().build_epoch).unwrap_or(0);
    metrics.geo_build_time.set(build);
    let ready = Arc::new(AtomicBool::new(settings.catalog.bridges().is_empty()));
    let reservation_window = Duration::from_secs(settings.policy.reservation_seconds);
    Ok(Arc::new(AppState {
        geo: Arc::new(Geo::new(geo)),
        catalog: Arc::new(ArcSwap::from_pointee(settings.catalog.clone())),
        health: Arc::new(ArcSwap::from_pointee(HealthSnapshot::default())),
        signer: Arc::new(signer),
        metrics: Arc::new(metrics),
        ready,
        lobby_credentials: settings.server.lobby_credentials.clone(),
        jitsi: settings.jitsi.clone(),
        policy: settings.policy.clone(),
        survey: select::Cache::default(),
        reservations: Mutex::new(Ledger::new(reservation_window)),
    }))
}

/// The signer the settings ask for; generates the RS256 key on first start when none is set.
fn signer(settings: &Settings) -> Result<Signer, String> {
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
            let path = settings.key_file();
            if settings.jitsi.key_file.is_none() && !path.exists() {
                generate_key(&path)?;
            }
            warn_if_readable_by_others(&path);
            let key = RsaKey::load(&path, settings.key_id()).map_err(|e| e.to_string())?;
            let (kid, bits, path) = (key.kid(), key.bits(), path.display());
            tracing::info!(%kid, bits, %path, "signing key loaded");
            Ok(Signer::Rs256(key))
        }
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
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            let path = path.display();
            tracing::warn!(%path, "key file is readable by other users; chmod 600");
        }
    }
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(settings: Settings, state: Arc<AppState>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.server.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening on http://{addr}");
    let (stop, stopped) = watch::channel(false);
    let prober = Prober {
        catalog: state.catalog.clone(),
        health: state.health.clone(),
        ready: state.ready.clone(),
        config: settings.probe.clone(),
        metrics: state.metrics.clone(),
    };
    let probing = tokio::spawn(
        prober
            .run(stopped)
            .instrument(tracing::info_span!("prober")),
    );
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped accepting; stopping the prober");
    let _ = stop.send(true);
    probing.await?;
    Ok(())
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
