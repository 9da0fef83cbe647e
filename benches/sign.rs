//! RS256 token issuing speed with a 4096-bit key, on one thread, for `bench/sign.sh`.
//!
//! `cargo bench --bench sign` issues tokens (claims, JSON, RSA signature) for
//! `GEOBRIDGE_BENCH_SECONDS` (default 10) and prints `issued_per_second <rate>`. Run by
//! `cargo test` (no `--bench` argument) it issues a few tokens with a 2048-bit key and
//! checks their shape, so the benchmark cannot rot.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use geobridge::room::User;
use geobridge::token::{Grant, KeyId, KeySource, Keyring, Profile, Role, Signer};

fn signer(bits: usize, dir: &std::path::Path) -> Signer {
    let file = dir.join("bench.pem");
    let pem = geobridge::token::generate_pem(bits).expect("key generated");
    std::fs::write(&file, pem).expect("key written");
    let source = KeySource {
        kid: KeyId::parse("bench").expect("valid kid"),
        file,
        signing: true,
    };
    Signer::Rs256(Keyring::load(&[source]).expect("key loads"))
}

fn profile() -> Profile {
    Profile {
        issuer: "CodeWithMe".to_owned(),
        audience: "jitsi".to_owned(),
        subject: "*".to_owned(),
        lifetime_seconds: 3600,
        nbf_margin_seconds: 30,
        features: BTreeMap::new(),
    }
}

/// Issues tokens for `duration`; returns how many.
fn issue_for(signer: &Signer, duration: Duration) -> u64 {
    let user = User {
        id: "u-42".to_owned(),
        name: "Zoë Ångström".to_owned(),
        email: Some("zoe@example.com".to_owned()),
        avatar: None,
    };
    let (profile, started, mut issued) = (profile(), Instant::now(), 0u64);
    while started.elapsed() < duration {
        let grant = Grant {
            user: &user,
            role: Role::Host,
            room: "k3v9q2m7x4b8n6c5z1wd",
            region: "eu-west",
        };
        let token = signer.issue(&profile, &grant, 1_800_000_000);
        black_box(token.expect("signs").expect("a token"));
        issued += 1;
    }
    issued
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    if !std::env::args().any(|a| a == "--bench") {
        let signer = signer(2048, dir.path());
        assert!(issue_for(&signer, Duration::from_millis(50)) > 0);
        println!("sign: smoke run passed (run with `cargo bench --bench sign` to measure)");
        return;
    }
    let seconds: u64 = std::env::var("GEOBRIDGE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let signer = signer(4096, dir.path());
    issue_for(&signer, Duration::from_millis(500));
    let started = Instant::now();
    let issued = issue_for(&signer, Duration::from_secs(seconds));
    let rate = issued as f64 / started.elapsed().as_secs_f64();
    println!("issued_per_second {rate:.1}");
}
