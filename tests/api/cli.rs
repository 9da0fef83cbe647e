//! The command line: keygen, lookup, check-config, and start-up refusals.

use crate::helpers::{command, repo_path, run};

/// keygen writes a 0600 key that openssl accepts and prints the path Prosody fetches; it
/// never overwrites a key, nor leaves a draft of one.
#[test]
fn keygen_writes_a_private_key() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("k.pem");
    let (ok, stdout, stderr) = run(command()
        .args(["keygen", "--bits", "2048", "--out"])
        .arg(&out));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("/8791edb7d806447dd0aaa98a2b568ad792696ed4d885f23b89f6beb7f7c4f44e.pem"),
        "{stdout}"
    );
    assert!(stdout.contains("-----BEGIN PUBLIC KEY-----"));
    let (ok, text, _) = run(std::process::Command::new("openssl")
        .args(["rsa", "-check", "-noout", "-in"])
        .arg(&out));
    assert!(ok, "openssl rejects the key: {text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (again, _, stderr) = run(command()
        .args(["keygen", "--bits", "2048", "--out"])
        .arg(&out));
    assert!(
        !again && stderr.contains("exists"),
        "overwrote the key: {stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["k.pem"], "only the key is left, no draft of it");
}

/// lookup prints the place and the region for each address.
#[test]
fn lookup_prints_regions() {
    let (ok, stdout, stderr) = run(command()
        .env(
            "GEOBRIDGE_GEO_DATABASE",
            repo_path("data/geobridge-city.mmdb"),
        )
        .args(["lookup", "81.2.69.142", "10.0.0.1", "nonsense"]));
    assert!(!ok, "an invalid address makes the exit status non-zero");
    assert!(stdout.contains("81.2.69.142\tEU/GB"), "{stdout}");
    assert!(stdout.contains("-> eu-west (nearest"), "{stdout}");
    assert!(
        stdout.contains("10.0.0.1\tno location (Private address)\t-> eu-central (default)"),
        "{stdout}"
    );
    assert!(stderr.contains("nonsense\tnot an IP address"), "{stderr}");
}

/// A bad configuration lists every problem and exits 64; secrets are masked when valid.
#[test]
fn check_config_reports_everything() {
    let (ok, _, stderr) = run(command()
        .env("GEOBRIDGE_LISTEN", "0.0.0.0:9")
        .env("JITSI_URL", "meet")
        .env("GEOBRIDGE_PROBE_RISE", "0")
        .arg("check-config"));
    assert!(!ok);
    for expected in [
        "server.lobby_credentials",
        "jitsi.url: 'meet'",
        "probe.rise",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected} missing from:\n{stderr}"
        );
    }
    let status = command()
        .env("GEOBRIDGE_PROBE_RISE", "0")
        .arg("check-config")
        .status()
        .expect("runs");
    assert_eq!(status.code(), Some(64));

    let (ok, stdout, _) = run(command()
        .env("GEOBRIDGE_LOBBY_CREDENTIALS", "very-secret-credential-1")
        .arg("check-config"));
    assert!(ok);
    assert!(
        stdout.contains("<set>") && !stdout.contains("very-secret-credential-1"),
        "{stdout}"
    );

    // One credential for both roles would give lobbies the admin's powers.
    let (ok, _, stderr) = run(command()
        .env("GEOBRIDGE_LOBBY_CREDENTIALS", "very-secret-credential-1")
        .env(
            "GEOBRIDGE_ADMIN_CREDENTIALS",
            "admin-credential-000000,very-secret-credential-1",
        )
        .arg("check-config"));
    assert!(!ok);
    assert!(stderr.contains("also an admin credential"), "{stderr}");
    assert!(!stderr.contains("very-secret-credential-1"), "{stderr}");
}

/// serve refuses a public address without a lobby credential, before binding, with 64.
#[test]
fn serve_refuses_open_public_listener() {
    let out = command()
        .env("GEOBRIDGE_LISTEN", "0.0.0.0:0")
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GEOBRIDGE_LOBBY_CREDENTIALS"), "{stderr}");
    assert!(!stderr.contains("listening on http"), "{stderr}");
}

/// A PostgreSQL server that refuses connections stops start-up at once (not after the
/// pool's wait), naming the server and the cause but not the password.
#[test]
fn unreachable_database_is_named_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let started = std::time::Instant::now();
    let out = command()
        .env("GEOBRIDGE_STATE_DIR", dir.path().join("state"))
        .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
        .env(
            "GEOBRIDGE_DATABASE_URL",
            format!("postgres://geobridge:hunter2@127.0.0.1:{port}/geobridge"),
        )
        .arg("serve")
        .output()
        .expect("runs");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let server = format!("database server 127.0.0.1:{port}");
    for expected in [server.as_str(), "refused", "GEOBRIDGE_DATABASE_URL"] {
        assert!(stderr.contains(expected), "{expected} missing:\n{stderr}");
    }
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
}

/// A PostgreSQL server that answers but has no such database: start-up names what the
/// server said, without sqlx's wrapping or PostgreSQL's source line, and says to correct
/// the URL rather than to start the server.
#[test]
fn refused_logins_say_what_the_server_said() {
    let dir = tempfile::tempdir().expect("dir");
    let server = crate::helpers::postgres_server();
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    let out = command()
        .env("GEOBRIDGE_STATE_DIR", dir.path().join("state"))
        .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
        .env("GEOBRIDGE_DATABASE_URL", format!("{base}/no_such_database"))
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = "the server said: database \"no_such_database\" does not exist; correct the user";
    assert!(stderr.contains(said), "{stderr}");
    assert!(!stderr.contains(" at line "), "{stderr}");
    assert!(!stderr.contains("start it"), "{stderr}");
}

/// Database URLs that serve would refuse are found by check-config too, without
/// connecting and without quoting the password; serve names the same problem.
#[test]
fn bad_database_urls_are_found_by_check_config() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        (
            "postgres://u:hunter2@127.0.0.1:99999/db",
            "invalid port number",
        ),
        (
            "postgres://u:hunter2@127.0.0.1/db?sslmode=bogus",
            "\"bogus\"",
        ),
        ("sqlite:///tmp/geobridge-none.db?mode=bogus", "\"bogus\""),
        (
            "postgres://u:hunter2@127.0.0.1/db?sslmode=require",
            "sslmode asks for TLS",
        ),
        (
            "postgres://u:hunter2@127.0.0.1/db?sslmode=verify-full",
            "sslmode asks for TLS",
        ),
        (
            "postgres://u:19/hunter2@127.0.0.1/db",
            "an '@' after the host",
        ),
    ];
    for (url, expected) in cases {
        for command_name in ["check-config", "serve"] {
            let out = command()
                .env("GEOBRIDGE_STATE_DIR", dir.path().join("state"))
                .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
                .env("GEOBRIDGE_DATABASE_URL", url)
                .arg(command_name)
                .output()
                .expect("runs");
            assert_eq!(out.status.code(), Some(64), "{command_name} {url}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("store.url: "),
                "{command_name} {url}:\n{stderr}"
            );
            assert!(stderr.contains(expected), "{command_name} {url}:\n{stderr}");
            assert!(!stderr.contains("hunter2"), "{stderr}");
        }
    }
}

/// A missing or corrupt GeoIP file is a start-up error naming the file.
#[test]
fn bad_geo_database_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"this is not a database").expect("write");
    let out = command()
        .env("GEOBRIDGE_GEO_DATABASE", &corrupt)
        .env("GEOBRIDGE_STATE_DIR", dir.path().join("state"))
        .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt.mmdb"));
}

/// A GeoIP file that opens but is damaged inside is found by check-config's full check.
#[test]
fn check_config_walks_the_whole_geo_database() {
    let dir = tempfile::tempdir().expect("dir");
    let damaged = dir.path().join("damaged.mmdb");
    crate::helpers::damaged_database(&damaged);
    let out = command()
        .env("GEOBRIDGE_GEO_DATABASE", &damaged)
        .arg("check-config")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged.mmdb"));
}

/// check-config finds a state dir that cannot be one, and names a refused listen address
/// by its variable and value; serve says each problem once.
#[test]
fn unusable_state_dir_and_listen_address_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").expect("write");
    let out = command()
        .env("GEOBRIDGE_STATE_DIR", file.join("state"))
        .arg("check-config")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("state dir"), "{stderr}");
    let out = command()
        .env("GEOBRIDGE_STATE_DIR", file.join("state"))
        .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("state dir").count(), 1, "{stderr}");
    let out = command()
        .env("GEOBRIDGE_LISTEN", "not-an-addr")
        .arg("check-config")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.listen: invalid socket address syntax"),
        "{stderr}"
    );
    assert!(
        stderr.contains("GEOBRIDGE_LISTEN='not-an-addr'"),
        "{stderr}"
    );
}

/// A named pipe given as the GeoIP file is refused at once instead of read forever.
#[test]
fn geo_database_must_be_a_regular_file() {
    let dir = tempfile::tempdir().expect("dir");
    let pipe = dir.path().join("pipe.mmdb");
    let made = std::process::Command::new("mkfifo").arg(&pipe).status();
    assert!(made.expect("mkfifo runs").success());
    let mut child = command()
        .env("GEOBRIDGE_GEO_DATABASE", &pipe)
        .env("GEOBRIDGE_STATE_DIR", dir.path().join("state"))
        .env("GEOBRIDGE_LISTEN", "127.0.0.1:0")
        .arg("serve")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().expect("kill");
            panic!("serve still waiting on a named pipe after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(64));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("pipe.mmdb") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

/// check-config finds what serve would refuse: limits out of range, a missing key file, an
/// empty credential file, an unknown database scheme; all at once, exit 64.
#[test]
fn check_config_checks_resources_too() {
    let dir = tempfile::tempdir().expect("dir");
    let empty = dir.path().join("lobby.txt");
    std::fs::write(&empty, "# nobody\n").expect("write");
    let out = command()
        .env("GEOBRIDGE_MAX_HEADER_BYTES", "8000")
        .env("GEOBRIDGE_MAX_CONCURRENT_REQUESTS", "0")
        .env("JITSI_RSA_JWT_KEY_FILE", dir.path().join("missing.pem"))
        .env("GEOBRIDGE_LOBBY_CREDENTIALS_FILE", &empty)
        .env("GEOBRIDGE_DATABASE_URL", "mysql://x")
        .arg("check-config")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in ["server.max_header_bytes", "server.max_concurrent_requests"] {
        assert!(stderr.contains(expected), "{expected} missing:\n{stderr}");
    }
    let out = command()
        .env("JITSI_RSA_JWT_KEY_FILE", dir.path().join("missing.pem"))
        .env("GEOBRIDGE_LOBBY_CREDENTIALS_FILE", &empty)
        .env("GEOBRIDGE_DATABASE_URL", "mysql://x")
        .arg("check-config")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in ["missing.pem", "holds no credential", "store.url"] {
        assert!(stderr.contains(expected), "{expected} missing:\n{stderr}");
    }
}

/// A variable that is not UTF-8 is ignored when geobridge does not read it, and refused by
/// name, never by value, when it does; a misspelt variable is named beside the problems.
#[test]
fn environment_that_is_not_text() {
    use std::os::unix::ffi::OsStrExt;
    let value = std::ffi::OsStr::from_bytes(b"Sekr\xffSekrSekrSekrSekr");
    let (ok, stdout, stderr) = run(command()
        .env("UNRELATED_VARIABLE", value)
        .args(["lookup", "8.8.8.8"]));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("us-west"), "{stdout}");
    let refused = |name: &str, value: &std::ffi::OsStr| {
        let out = command()
            .env("GEOBRIDGE_LISTEN", "0.0.0.0:0")
            .env(name, value)
            .arg("check-config")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(64));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused("GEOBRIDGE_ADMIN_CREDENTIALS", value);
    let expected = "GEOBRIDGE_ADMIN_CREDENTIALS: the value is not UTF-8 text";
    assert!(stderr.contains(expected), "{stderr}");
    assert!(!stderr.contains("Sekr"), "{stderr}");
    let typo = "lobby-credential-0123456789".as_ref();
    let stderr = refused("GEOBRIDGE_LOBBY_CREDENTIAL", typo);
    let expected = "GEOBRIDGE_LOBBY_CREDENTIAL is not a variable geobridge reads (a typo?)";
    assert!(stderr.contains(expected), "{stderr}");
    assert!(
        stderr.contains("needs at least one lobby credential"),
        "{stderr}"
    );
}
