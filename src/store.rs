//! Durable state: regions, bridges and rooms in SQLite (default) or PostgreSQL.
//!
//! One schema serves both; regions and bridges are stored as JSON bodies beside the columns
//! that queries filter on. Every registry change bumps `registry_version` in the same
//! transaction, so each instance notices changes made by others with one cheap read. A write
//! is acknowledged only after its transaction commits (SQLite runs with `synchronous=FULL`).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::catalog::{AdminState, Bridge, BridgeId, Region, RegionId};

/// Migrations in order; the position is the schema version (1-based).
const MIGRATIONS: &[&str] = &[include_str!("../migrations/0001_registry.sql")];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database reported an error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored body could not be read back.
    #[error("stored {what} '{id}' is not valid: {why}")]
    Corrupt {
        /// Table.
        what: &'static str,
        /// Row id.
        id: String,
        /// Decoder message.
        why: String,
    },
    /// The database was migrated by a newer geobridge.
    #[error(
        "the database schema is version {found} but this geobridge knows versions up to \
         {known}; run the newer geobridge or restore a matching backup"
    )]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// The change conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The entry is the config file's: the API may not change it.
    #[error("{}", managed_by_config(.what, .id))]
    ManagedByConfig {
        /// "region" or "bridge".
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// `store.url` cannot be used.
    #[error("store.url: {0}")]
    BadUrl(String),
    /// The database server could not be reached, or refused the login.
    #[error("cannot connect to the database server {server}: {cause}; {advice}")]
    Connect {
        /// Host and port, without credentials.
        server: String,
        /// What went wrong.
        cause: String,
        /// What to do about it.
        advice: &'static str,
    },
}

/// How long the first connection to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request waits for a connection from the pool: well inside the request
/// timeout (10 s by default), so a database out of reach is answered as such, soon.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Who owns an entry: the config file (re-seeded at start) or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedBy {
    /// Declared in the config file.
    Config,
    /// Created through the admin API.
    Api,
}

impl ManagedBy {
    fn as_str(self) -> &'static str {
        match self {
            ManagedBy::Config => "config",
            ManagedBy::Api => "api",
        }
    }

    fn parse(text: &str) -> ManagedBy {
        if text == "config" {
            ManagedBy::Config
        } else {
            ManagedBy::Api
        }
    }
}

/// A stored entry with its bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct Stored<T> {
    /// The entry.
    #[serde(flatten)]
    pub item: T,
    /// Who owns it.
    pub managed_by: ManagedBy,
    /// Last change, seconds since 1970.
    pub updated_at: i64,
}

/// Every region and bridge at one version.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Regions in display order (config order first).
    pub regions: Vec<Stored<Region>>,
    /// Bridges, by id.
    pub bridges: Vec<Stored<Bridge>>,
    /// The version these were read at.
    pub version: i64,
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomRecord {
    /// Room name.
    pub name: String,
    /// The Jitsi shard it lives on.
    pub shard: String,
    /// The host's region.
    pub region: String,
    /// The host's user id.
    pub host_id: String,
    /// Creation, seconds since 1970.
    pub created_at: i64,
    /// Expiry, seconds since 1970.
    pub expires_at: i64,
}

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// A new entry.
    Created,
    /// An existing entry was replaced.
    Replaced,
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
}

/// Seconds since 1970.
pub fn now_seconds() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// The SQLite URL of the default database inside `state_dir`.
pub fn sqlite_url(state_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        state_dir.join("geobridge.db").display()
    )
}

/// What is wrong with `url` as a database URL, found without connecting. The URL itself is
/// not quoted: it may hold a password.
pub fn url_problem(url: &str) -> Option<String> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres_problem(url)
    } else if url.starts_with("sqlite:") {
        Some(cause(&SqliteConnectOptions::from_str(url).err()?))
    } else {
        Some("use a postgres:// or sqlite:// URL".to_owned())
    }
}

/// What is wrong with a PostgreSQL URL: one that does not parse, one whose host was found
/// inside a password, or one that asks for TLS, which this build does not have.
fn postgres_problem(url: &str) -> Option<String> {
    // Where a password holds '/', '?' or '#', the parser ends the host there and the rest,
    // with its '@', lands in the path, query or fragment.
    let after_host = url.split_once("://").map_or(url, |(_, rest)| rest);
    let at = after_host.find('@');
    if at
        .zip(after_host.find(['/', '?', '#']))
        .is_some_and(|(at, end)| at > end)
    {
        return Some(
            "an '@' after the host: a password holding '/', '?' or '#' must write them \
             percent-encoded (%2F, %3F, %23), as must an '@' elsewhere (%40)"
                .to_owned(),
        );
    }
    let options = match PgConnectOptions::from_str(url) {
        Ok(options) => options,
        // The parser names the parameter by its own field name; the URL says `sslmode`.
        Err(error) if cause(&error).contains("`ssl_mode`") => {
            let cause = cause(&error).replace("`ssl_mode`", "sslmode");
            return Some(format!(
                "{cause}; use disable, allow or prefer (this build has no TLS: require, \
                 verify-ca and verify-full are refused)"
            ));
        }
        Err(error) => return Some(cause(&error)),
    };
    if options.get_port() == 0 && options.get_socket().is_none() {
        return Some("port 0 cannot be connected to; give the server's port (5432)".to_owned());
    }
    let tls = !matches!(
        options.get_ssl_mode(),
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer
    );
    // Known shortcoming: sqlx is built without TLS here, so the connection to PostgreSQL
    // is plain; reach a remote server through a trusted network or a tunnel.
    tls.then(|| {
        "sslmode asks for TLS, which this build of geobridge cannot speak to PostgreSQL; \
         use sslmode=disable, allow or prefer over a trusted network or a tunnel"
            .to_owned()
    })
}

/// The server a PostgreSQL URL names, for messages: `host:port`, or the socket's path.
fn server_of(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(options) => match options.get_socket() {
            Some(socket) => format!("socket {}", socket.display()),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        },
        Err(_) => "named in store.url".to_owned(),
    }
}

/// `error`'s message without the wrapping that repeats "error with configuration".
/// A server's own refusal is given as its message alone, without sqlx's prefix and the
/// line of PostgreSQL's source that raised it.
fn cause(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Configuration(inner) => match inner.downcast_ref::<sqlx::Error>() {
            Some(nested) => cause(nested),
            None => inner.to_string(),
        },
        sqlx::Error::Database(refusal) => format!("the server said: {}", refusal.message()),
        other => other.to_string(),
    }
}

/// Opens and closes one connection to `url`. The pool retries a refused connection until
/// its acquire timeout and then reports only the timeout; one direct attempt first says at
/// once why the server cannot be used.
async fn try_connect(url: &str) -> Result<(), Error> {
    let server = server_of(url);
    let failed = |cause: String, advice| Error::Connect {
        server: server.clone(),
        cause,
        advice,
    };
    let unreachable = "start it, or correct the host and port in store.url \
                       (GEOBRIDGE_DATABASE_URL)";
    match tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url)).await {
        Ok(Ok(connection)) => {
            // Closing politely is a courtesy to the server; the check already passed.
            let _ = connection.close().await;
            Ok(())
        }
        // The server answered and refused: a user, password or database it does not have.
        Ok(Err(error @ sqlx::Error::Database(_))) => Err(failed(
            cause(&error),
            "correct the user, password or database in store.url (GEOBRIDGE_DATABASE_URL), \
             or create them on the server",
        )),
        Ok(Err(error)) => Err(failed(cause(&error), unreachable)),
        Err(_) => {
            let waited = CONNECT_TIMEOUT.as_secs();
            Err(failed(format!("no answer within {waited} s"), unreachable))
        }
    }
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies migrations.
    pub async fn open(url: &str) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        if let Some(problem) = url_problem(url) {
            return Err(Error::BadUrl(problem));
        }
        let postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
        if postgres {
            try_connect(url).await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 8 } else { 4 })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !postgres {
                        let pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                                       PRAGMA busy_timeout=5000;";
                        sqlx::raw_sql(pragmas).execute(conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let store = Store { pool, postgres };
        store.migrate().await?;
        Ok(store)
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a transaction that read first and wrote later would fail with
    /// "database is locked" when another writer got in between, instead of waiting for it.
    async fn begin_write(&self) -> Result<Tx<'static>, Error> {
        if self.postgres {
            Ok(self.pool.begin().await?)
        } else {
            Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
        }
    }

    /// Closes every connection, waiting for them to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        if self.postgres {
            // Two instances starting together must not both migrate.
            sqlx::query("SELECT pg_advisory_xact_lock(7402519)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS geobridge_schema \
             (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let found: Option<i64> = sqlx::query("SELECT MAX(version) FROM geobridge_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let found = found.unwrap_or(0);
        let known = i64::try_from(MIGRATIONS.len()).expect("a handful of migrations");
        if found > known {
            return Err(Error::SchemaTooNew { found, known });
        }
        for (version, sql) in (1..)
            .zip(MIGRATIONS)
            .skip(usize::try_from(found).unwrap_or(0))
        {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO geobridge_schema (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now_seconds())
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "database schema migrated");
        }
        tx.commit().await?;
        Ok(())
    }

    /// The registry version; changes whenever any region or bridge changes.
    pub async fn version(&self) -> Result<i64, Error> {
        let row = sqlx::query("SELECT version FROM registry_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Reads every region and bridge.
    pub async fn registry(&self) -> Result<Registry, Error> {
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query("SELECT version FROM registry_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let rows = sqlx::query(
            "SELECT id, body, managed_by, updated_at FROM regions ORDER BY position, id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let regions = rows
            .iter()
            .map(|r| stored(r, "region"))
            .collect::<Result<_, _>>()?;
        let rows = sqlx::query(
            "SELECT id, body, managed_by, updated_at, admin_state FROM bridges ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let bridges = rows.iter().map(stored_bridge).collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(Registry {
            regions,
            bridges,
            version,
        })
    }

    /// Makes the config file's regions and bridges the config-managed entries: adds and
    /// updates them, and removes config-managed entries the file no longer lists.
    pub async fn seed(&self, regions: &[Region], bridges: &[Bridge]) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        let now = now_seconds();
        for (position, region) in (0_i64..).zip(regions) {
            upsert_region(&mut tx, region, ManagedBy::Config, position, now).await?;
        }
        for bridge in bridges {
            upsert_bridge(&mut tx, bridge, ManagedBy::Config, now).await?;
        }
        let bridge_ids: Vec<&str> = bridges.iter().map(|b| b.id.as_str()).collect();
        for id in config_ids(
            &mut tx,
            "SELECT id FROM bridges WHERE managed_by = 'config'",
        )
        .await?
        {
            if !bridge_ids.contains(&id.as_str()) {
                sqlx::query("DELETE FROM bridges WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let region_ids: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
        // A region the file dropped stays while bridges (added through the API) are in it;
        // it is handed to the API so operators can delete it once it is empty.
        sqlx::query(
            "UPDATE regions SET managed_by = 'api' WHERE managed_by = 'config' \
             AND id IN (SELECT region FROM bridges)",
        )
        .execute(&mut *tx)
        .await?;
        for region in regions {
            let sql = "UPDATE regions SET managed_by = 'config' WHERE id = $1";
            sqlx::query(sql)
                .bind(region.id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let sql = "SELECT id FROM regions WHERE managed_by = 'config' \
                   AND id NOT IN (SELECT region FROM bridges)";
        for id in config_ids(&mut tx, sql).await? {
            if !region_ids.contains(&id.as_str()) {
                sqlx::query("DELETE FROM regions WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates or replaces a region through the API.
    pub async fn put_region(&self, region: &Region) -> Result<Put, Error> {
        let mut tx = self.begin_write().await?;
        let existing = managed_by(&mut tx, Table::Regions, region.id.as_str()).await?;
        refuse_config_managed(existing, "region", region.id.as_str())?;
        let position = match existing {
            Some(_) => None,
            None => Some(1_000_000 + now_seconds()),
        };
        upsert_region(
            &mut tx,
            region,
            ManagedBy::Api,
            position.unwrap_or(0),
            now_seconds(),
        )
        .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(if existing.is_some() {
            Put::Replaced
        } else {
            Put::Created
        })
    }

    /// Deletes a region; refused while bridges are in it.
    pub async fn delete_region(&self, id: &RegionId) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let existing = managed_by(&mut tx, Table::Regions, id.as_str()).await?;
        refuse_config_managed(existing, "region", id.as_str())?;
        let rows = sqlx::query("SELECT id FROM bridges WHERE region = $1 ORDER BY id")
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        if !rows.is_empty() {
            let ids: Vec<String> = rows
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?;
            return Err(Error::Conflict(format!(
                "region '{id}' still has bridges: {}; delete or move them first",
                ids.join(", ")
            )));
        }
        let deleted = sqlx::query("DELETE FROM regions WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Creates or replaces a bridge through the API; its region must exist.
    pub async fn put_bridge(&self, bridge: &Bridge) -> Result<Put, Error> {
        let mut tx = self.begin_write().await?;
        let existing = managed_by(&mut tx, Table::Bridges, bridge.id.as_str()).await?;
        refuse_config_managed(existing, "bridge", bridge.id.as_str())?;
        if managed_by(&mut tx, Table::Regions, bridge.region.as_str())
            .await?
            .is_none()
        {
            return Err(Error::Conflict(format!(
                "bridge '{}': region '{}' does not exist; create it first",
                bridge.id, bridge.region
            )));
        }
        upsert_bridge(&mut tx, bridge, ManagedBy::Api, now_seconds()).await?;
        // A replaced bridge takes the admin state it was sent with.
        set_admin(&mut tx, &bridge.id, bridge.admin_state).await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(if existing.is_some() {
            Put::Replaced
        } else {
            Put::Created
        })
    }

    /// Deletes a bridge created through the API.
    pub async fn delete_bridge(&self, id: &BridgeId) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let existing = managed_by(&mut tx, Table::Bridges, id.as_str()).await?;
        refuse_config_managed(existing, "bridge", id.as_str())?;
        let deleted = sqlx::query("DELETE FROM bridges WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Changes a bridge's admin state (allowed for config-managed bridges too).
    pub async fn set_admin_state(&self, id: &BridgeId, state: AdminState) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let changed = set_admin(&mut tx, id, state).await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Stores a new room.
    pub async fn insert_room(&self, room: &RoomRecord) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO rooms (name, shard, region, host_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&room.name)
        .bind(&room.shard)
        .bind(&room.region)
        .bind(&room.host_id)
        .bind(room.created_at)
        .bind(room.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A room that has not expired at `now`.
    pub async fn live_room(&self, name: &str, now: i64) -> Result<Option<RoomRecord>, Error> {
        let row = sqlx::query(
            "SELECT name, shard, region, host_id, created_at, expires_at FROM rooms \
             WHERE name = $1 AND expires_at > $2",
        )
        .bind(name)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| room(&r)).transpose()
    }

    /// Deletes rooms expired at `now`; returns how many.
    pub async fn purge_rooms(&self, now: i64) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM rooms WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Rooms not yet expired at `now`.
    pub async fn count_live_rooms(&self, now: i64) -> Result<i64, Error> {
        let row = sqlx::query("SELECT COUNT(*) FROM rooms WHERE expires_at > $1")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

async fn bump(tx: &mut Tx<'_>) -> Result<(), Error> {
    sqlx::query("UPDATE registry_version SET version = version + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn config_ids(tx: &mut Tx<'_>, sql: &'static str) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(sql).fetch_all(&mut **tx).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// Which table an id is looked up in.
#[derive(Clone, Copy)]
enum Table {
    Regions,
    Bridges,
}

async fn managed_by(tx: &mut Tx<'_>, table: Table, id: &str) -> Result<Option<ManagedBy>, Error> {
    let sql = match table {
        Table::Regions => "SELECT managed_by FROM regions WHERE id = $1",
        Table::Bridges => "SELECT managed_by FROM bridges WHERE id = $1",
    };
    let row = sqlx::query(sql).bind(id).fetch_optional(&mut **tx).await?;
    let text: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
    Ok(text.as_deref().map(ManagedBy::parse))
}

fn refuse_config_managed(
    existing: Option<ManagedBy>,
    what: &'static str,
    id: &str,
) -> Result<(), Error> {
    if existing == Some(ManagedBy::Config) {
        let id = id.to_owned();
        return Err(Error::ManagedByConfig { what, id });
    }
    Ok(())
}

/// Why the API may not change the config file's `what` `id`.
pub fn managed_by_config(what: &str, id: &str) -> String {
    format!(
        "{what} '{id}' is managed by the config file; change it there and restart (the API \
         may only change a config bridge's admin state)"
    )
}

async fn upsert_region(
    tx: &mut Tx<'_>,
    region: &Region,
    by: ManagedBy,
    position: i64,
    now: i64,
) -> Result<(), Error> {
    let body = serde_json::to_string(region).expect("a region serialises");
    sqlx::query(
        "INSERT INTO regions (id, body, managed_by, position, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, managed_by = excluded.managed_by, \
         position = CASE WHEN excluded.managed_by = 'config' THEN excluded.position \
         ELSE regions.position END, updated_at = excluded.updated_at",
    )
    .bind(region.id.as_str())
    .bind(body)
    .bind(by.as_str())
    .bind(position)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_bridge(
    tx: &mut Tx<'_>,
    bridge: &Bridge,
    by: ManagedBy,
    now: i64,
) -> Result<(), Error> {
    let body = serde_json::to_string(bridge).expect("a bridge serialises");
    // The admin state is only taken on insert: an operator's drain survives restarts.
    sqlx::query(
        "INSERT INTO bridges (id, region, body, admin_state, managed_by, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET region = excluded.region, body = excluded.body, \
         managed_by = excluded.managed_by, updated_at = excluded.updated_at",
    )
    .bind(bridge.id.as_str())
    .bind(bridge.region.as_str())
    .bind(body)
    .bind(admin_text(bridge.admin_state))
    .bind(by.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_admin(tx: &mut Tx<'_>, id: &BridgeId, state: AdminState) -> Result<bool, Error> {
    let done = sqlx::query("UPDATE bridges SET admin_state = $1, updated_at = $2 WHERE id = $3")
        .bind(admin_text(state))
        .bind(now_seconds())
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

fn admin_text(state: AdminState) -> &'static str {
    match state {
        AdminState::Active => "active",
        AdminState::Drain => "drain",
        AdminState::Maintenance => "maintenance",
    }
}

fn stored<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    what: &'static str,
) -> Result<Stored<T>, Error> {
    let id: String = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    let item = serde_json::from_str(&body).map_err(|e| Error::Corrupt {
        what,
        id,
        why: e.to_string(),
    })?;
    let managed_by = ManagedBy::parse(&row.try_get::<String, _>("managed_by")?);
    Ok(Stored {
        item,
        managed_by,
        updated_at: row.try_get("updated_at")?,
    })
}

fn stored_bridge(row: &AnyRow) -> Result<Stored<Bridge>, Error> {
    let mut bridge: Stored<Bridge> = stored(row, "bridge")?;
    let state: String = row.try_get("admin_state")?;
    bridge.item.admin_state = match state.as_str() {
        "drain" => AdminState::Drain,
        "maintenance" => AdminState::Maintenance,
        _ => AdminState::Active,
    };
    Ok(bridge)
}

fn room(row: &AnyRow) -> Result<RoomRecord, Error> {
    Ok(RoomRecord {
        name: row.try_get("name")?,
        shard: row.try_get("shard")?,
        region: row.try_get("region")?,
        host_id: row.try_get("host_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages name the server sqlx would reach, never the user or password.
    #[test]
    fn servers_are_named_without_credentials() {
        let named = server_of("postgres://bob:pw@db.example:6543/x");
        assert_eq!(named, "db.example:6543");
        let named = server_of("postgres://bob:pw@%2Fvar%2Frun%2Fpostgresql/x");
        assert_eq!(named, "socket /var/run/postgresql");
        assert_eq!(
            url_problem("postgres://bob:pw@db/x?application_name=a"),
            None
        );
        assert_eq!(url_problem("postgres://db/x?sslmode=prefer"), None);
        let bogus = url_problem("postgres://db/x?sslmode=bogus").expect("refused");
        assert!(
            bogus.starts_with("unknown value \"bogus\" for sslmode; use disable,"),
            "{bogus}"
        );
        let problem = url_problem("postgres://bob:1/pw@db/x").expect("refused");
        assert!(problem.starts_with("an '@' after the host"), "{problem}");
    }
}
