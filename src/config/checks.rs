//! Checks of values that parse but cannot work, each problem naming its setting.

use std::collections::BTreeMap;

use super::{Auth, Jitsi, SelectSection, Server};
use crate::token::KeyId;

pub(super) fn reservation_problems(select: &SelectSection) -> Vec<String> {
    let mut problems = Vec::new();
    if !(0.0..=1.0).contains(&select.participant_stress) {
        problems.push(format!(
            "select.participant_stress: {} must be between 0 and 1",
            select.participant_stress
        ));
    }
    if select.reservation_seconds > 600 {
        problems.push(format!(
            "select.reservation_seconds: {} is above 600",
            select.reservation_seconds
        ));
    }
    problems
}

pub(super) fn server_problems(server: &Server) -> Vec<String> {
    let mut problems = Vec::new();
    let public = !server.listen.ip().is_loopback();
    let roles = [
        (
            "lobby",
            &server.lobby_credentials,
            &server.lobby_credentials_file,
        ),
        (
            "admin",
            &server.admin_credentials,
            &server.admin_credentials_file,
        ),
    ];
    for (role, list, file) in roles {
        if public && list.is_empty() && file.is_none() {
            let upper = role.to_uppercase();
            problems.push(format!(
                "server.{role}_credentials: listening on {} (not loopback) needs at least one \
                 {role} credential; set GEOBRIDGE_{upper}_CREDENTIALS or \
                 GEOBRIDGE_{upper}_CREDENTIALS_FILE",
                server.listen
            ));
        }
    }
    for (role, list) in [
        ("lobby", &server.lobby_credentials),
        ("admin", &server.admin_credentials),
    ] {
        if let Some(why) = list.iter().find_map(|c| credential_problem(c.expose())) {
            problems.push(format!("server.{role}_credentials: {why}"));
        }
    }
    let limits = [
        (
            "max_concurrent_requests",
            server.max_concurrent_requests as u64,
            1,
            1_000_000,
        ),
        (
            "request_timeout_ms",
            server.request_timeout_ms,
            100,
            600_000,
        ),
        (
            "header_read_timeout_ms",
            server.header_read_timeout_ms,
            100,
            600_000,
        ),
        (
            "max_header_bytes",
            server.max_header_bytes as u64,
            8192,
            1 << 20,
        ),
        ("shutdown_grace_ms", server.shutdown_grace_ms, 0, 600_000),
    ];
    for (name, value, min, max) in limits {
        if !(min..=max).contains(&value) {
            problems.push(format!(
                "server.{name}: {value} must be between {min} and {max}"
            ));
        }
    }
    problems
}

/// Why a bearer credential is too weak to use, if it is.
pub fn credential_problem(credential: &str) -> Option<String> {
    if credential.chars().count() < 16 || credential.contains(char::is_whitespace) {
        Some("each credential needs 16 or more characters and no spaces".to_owned())
    } else {
        None
    }
}

pub(super) fn jitsi_problems(jitsi: &Jitsi) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(why) = check_web_url(&jitsi.url) {
        problems.push(format!("jitsi.url: {why}"));
    }
    if let Err(why) = KeyId::parse(&jitsi.key_id) {
        problems.push(format!("jitsi.key_id: {why}"));
    }
    for (name, value) in [("issuer", &jitsi.issuer), ("audience", &jitsi.audience)] {
        if value.trim().is_empty() {
            problems.push(format!("jitsi.{name} must not be empty"));
        }
    }
    if jitsi.subject.trim().is_empty() {
        problems.push("jitsi.subject must not be empty; use '*' to accept any domain".to_owned());
    }
    if !(60..=7 * 86400).contains(&jitsi.token_lifetime_seconds) {
        problems.push(format!(
            "jitsi.token_lifetime_seconds: {} must be between 60 and 604800",
            jitsi.token_lifetime_seconds
        ));
    }
    if jitsi.nbf_margin_seconds > 3600 {
        problems.push(format!(
            "jitsi.nbf_margin_seconds: {} is above 3600",
            jitsi.nbf_margin_seconds
        ));
    }
    let prefix_ok = jitsi.room_prefix.len() <= 40
        && jitsi
            .room_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !prefix_ok {
        problems.push(format!(
            "jitsi.room_prefix: '{}' must be at most 40 characters of a-z, 0-9 and '-'",
            jitsi.room_prefix
        ));
    }
    problems.extend(key_problems(jitsi));
    problems.extend(feature_problems(&jitsi.features));
    if jitsi.auth == Auth::Hs256 {
        problems.extend(app_secret_problem(
            jitsi.app_secret.as_ref().map(|s| s.expose()),
        ));
    }
    problems
}

/// HS256 needs Prosody's app_secret, at least as long as the hash (RFC 7518, 3.2).
fn app_secret_problem(secret: Option<&str>) -> Option<String> {
    match secret.map_or(0, str::len) {
        0 => Some(
            "jitsi.app_secret: HS256 needs Prosody's app_secret; set GEOBRIDGE_JITSI_APP_SECRET"
                .to_owned(),
        ),
        1..32 => Some(
            "jitsi.app_secret: HS256 needs a secret of 32 bytes or more (RFC 7518, 3.2); make \
             one with `openssl rand -hex 32` and give Prosody the same"
                .to_owned(),
        ),
        _ => None,
    }
}

fn key_problems(jitsi: &Jitsi) -> Vec<String> {
    let mut problems = Vec::new();
    if jitsi.keys.is_empty() {
        return problems;
    }
    if jitsi.key_file.is_some() {
        problems.push(
            "jitsi.keys: set either [[jitsi.keys]] or jitsi.key_file (JITSI_RSA_JWT_KEY_FILE), \
             not both"
                .to_owned(),
        );
    }
    for entry in &jitsi.keys {
        if let Err(why) = KeyId::parse(&entry.kid) {
            problems.push(format!("jitsi.keys: {why}"));
        }
    }
    let signing: Vec<&str> = jitsi
        .keys
        .iter()
        .filter(|k| k.signing)
        .map(|k| k.kid.as_str())
        .collect();
    if signing.len() != 1 {
        problems.push(format!(
            "jitsi.keys: exactly one key needs signing = true; found {} ({})",
            signing.len(),
            signing.join(", ")
        ));
    }
    problems
}

fn feature_problems(features: &BTreeMap<String, bool>) -> Vec<String> {
    features
        .keys()
        .filter(|name| {
            name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(|name| {
            format!("jitsi.features: '{name}' must be 1-64 characters of a-z, 0-9, '-', '_', '.'")
        })
        .collect()
}

/// Checks a Jitsi web URL: http(s), a host, no user or password, no query or fragment.
pub fn check_web_url(url: &str) -> Result<(), String> {
    // Any '@' is refused, unquoted: where a password holds '/', '?' or '#', the parsed host
    // and path are parts of the password, so no split of the text can tell them apart.
    if url.contains('@') {
        return Err(
            "must not hold '@': a user name or password in it would be given to every \
                    user in the links; write an '@' of the path as %40"
                .to_owned(),
        );
    }
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Err(format!("'{url}' must start with https:// or http://"));
    }
    if url.contains(|c: char| c == '?' || c == '#' || c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "'{}' must not have a query, fragment, spaces or control characters",
            url.escape_debug()
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{url}' has no host"));
    }
    Ok(())
}
