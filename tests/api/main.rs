//! Integration tests: the real binary over real HTTP, with fake Videobridges.

mod cli;
mod errors;
mod helpers;
mod keys;
mod logs;
mod observability;
mod openapi;
mod plain;
mod probing;
mod prosody;
mod registry;
mod resilience;
mod rooms;
mod scenarios;
mod schema;
mod scripted;
mod select;
mod store;
mod verify;
