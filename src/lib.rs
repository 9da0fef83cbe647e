//! geobridge picks the Jitsi Videobridge region for a call and signs the Jitsi token for it.
//!
//! A lobby sends a user and the user's IP address; geobridge locates the address, chooses the
//! nearest region that has a healthy Videobridge, names the room, signs a token that Prosody's
//! token plugin accepts and returns the room link. The modules, one concern each:
//!
//! - [`config`]: typed settings from a TOML file and the environment, validated at start.
//! - [`geo`]: the GeoIP (mmdb) database, IP address to [`geo::Location`], special ranges.
//! - [`catalog`]: regions, bridges and pins, with their validated identifiers.
//! - [`probe`]: probes each bridge on its own schedule; one writer publishes health snapshots.
//! - [`select`]: the pure choice of a region from location, catalog, health and reservations.
//! - [`token`]: signing keys (RS256 with a key id, HS256), claims, public key PEM, key files.
//! - [`room`]: room names, user details and room links.
//! - [`store`]: regions, bridges and rooms in SQLite or PostgreSQL, with migrations.
//! - [`api`]: the HTTP route table, request and response types, errors and authentication.
//! - [`metrics`]: every Prometheus series, declared once.
//! - [`app`]: wires the modules together for `serve`: start-up, background tasks, shutdown.

pub mod api;
pub mod app;
pub mod catalog;
pub mod config;
pub mod geo;
pub mod metrics;
pub mod probe;
pub mod room;
pub mod select;
pub mod store;
pub mod token;
