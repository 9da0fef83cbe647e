//! `Settings::parse`: arbitrary TOML text with arbitrary environment overrides (after a NUL
//! byte, one `NAME=value` per line). Problems are reported, never panicked on, and accepted
//! settings print, as `check-config` prints them.
#![no_main]

use std::collections::HashMap;

use geobridge::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let (text, overrides) = data.split_once('\0').unwrap_or((data, ""));
    let env: HashMap<String, String> = overrides
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(settings) = Settings::parse("fuzz".into(), text, &env) {
        let _ = settings.key_id();
        toml::to_string_pretty(&settings).expect("accepted settings print");
    }
});
