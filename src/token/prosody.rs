//! The lines `geobridge prosody-config` prints for Prosody's Jitsi configuration.
//!
//! They set Jitsi's token authentication against this service (key server or shared secret)
//! and load `mod_geobridge_region` from `deploy/prosody/`, which copies the verified token's
//! `context.region` into the session so the participant's presence carries it to Jicofo.

use std::fmt::Write as _;

/// How Prosody checks the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// RS256: Prosody fetches public keys from this base URL (`.../asap`).
    KeyServer(String),
    /// HS256: Prosody holds the same `app_secret` (never printed).
    SharedSecret,
    /// No tokens at all.
    None,
}

/// What the printed configuration needs to know.
#[derive(Debug, Clone)]
pub struct ProsodyHost {
    /// The Jitsi VirtualHost, e.g. `meet.example.com`.
    pub domain: String,
    /// `app_id`: the tokens' `iss`.
    pub app_id: String,
    /// The tokens' `aud`.
    pub audience: String,
    /// Key server, shared secret or nothing.
    pub verification: Verification,
}

/// The VirtualHost and MUC component lines, as Lua for Prosody's config.
pub fn prosody_config(host: &ProsodyHost) -> String {
    let mut out = String::new();
    let domain = &host.domain;
    let _ = writeln!(out, "-- Prosody lines for Jitsi with geobridge tokens.");
    let _ = writeln!(
        out,
        "-- Copy deploy/prosody/mod_geobridge_region.lua into a folder of plugin_paths."
    );
    let _ = writeln!(out, "VirtualHost \"{domain}\"");
    if host.verification == Verification::None {
        let _ = writeln!(out, "    authentication = \"jitsi-anonymous\"");
        let _ = writeln!(out, "    -- jitsi.auth is none: links carry no token");
        return out;
    }
    let _ = writeln!(out, "    authentication = \"token\"");
    let _ = writeln!(out, "    app_id = \"{}\"", host.app_id);
    match &host.verification {
        Verification::KeyServer(url) => {
            let _ = writeln!(out, "    asap_key_server = \"{url}\"");
            let base = url.trim_end_matches('/').trim_end_matches("/asap");
            let _ = writeln!(
                out,
                "    -- token plugins that read a JWKS can use instead of asap_key_server:"
            );
            let _ = writeln!(
                out,
                "    -- cache_keys_url = \"{base}/.well-known/jwks.json\""
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "    app_secret = \"<the value of GEOBRIDGE_JITSI_APP_SECRET>\""
            );
        }
    }
    let _ = writeln!(
        out,
        "    asap_accepted_audiences = {{ \"{}\" }}",
        host.audience
    );
    let _ = writeln!(out, "    allow_empty_token = false");
    let _ = writeln!(
        out,
        "    -- add to this host's existing modules_enabled list:"
    );
    let _ = writeln!(out, "    modules_enabled = {{ \"geobridge_region\" }}");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "-- Optional: the signed region replaces one the client sends itself."
    );
    let _ = writeln!(out, "Component \"conference.{domain}\" \"muc\"");
    let _ = writeln!(out, "    modules_enabled = {{ \"geobridge_region\" }}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(verification: Verification) -> ProsodyHost {
        ProsodyHost {
            domain: "meet.example.com".to_owned(),
            app_id: "CodeWithMe".to_owned(),
            audience: "jitsi".to_owned(),
            verification,
        }
    }

    /// Key-server mode names the key server, the app id and the module; HS256 never prints
    /// a secret; no-token mode sets no token options.
    #[test]
    fn lines_per_mode() {
        let text = prosody_config(&host(Verification::KeyServer("http://g:8080/asap".into())));
        for line in [
            "VirtualHost \"meet.example.com\"",
            "authentication = \"token\"",
            "app_id = \"CodeWithMe\"",
            "asap_key_server = \"http://g:8080/asap\"",
            "cache_keys_url = \"http://g:8080/.well-known/jwks.json\"",
            "allow_empty_token = false",
            "modules_enabled = { \"geobridge_region\" }",
            "Component \"conference.meet.example.com\" \"muc\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let shared = prosody_config(&host(Verification::SharedSecret));
        assert!(shared.contains("app_secret = \"<the value of"), "{shared}");
        assert!(!shared.contains("asap_key_server"));
        let none = prosody_config(&host(Verification::None));
        assert!(!none.contains("app_id"), "{none}");
    }
}
