//! `RsaKey::from_pem`: arbitrary text as a signing key file. Anything accepted publishes a
//! public key PEM, never an empty or non-PEM one.
#![no_main]

use geobridge::token::{KeyId, RsaKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let kid = KeyId::parse("CWMKey").expect("a valid key id");
    if let Ok(key) = RsaKey::from_pem(text, kid) {
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(key.bits() >= 2048);
    }
});
