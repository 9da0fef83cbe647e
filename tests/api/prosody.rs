//! Prosody glue: `mod_geobridge_region` inside Debian's real Prosody, and the configuration
//! lines `geobridge prosody-config` prints.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{command, repo_path, run};

/// Runs Prosody with `config` until it exits (at most 60 s); returns its output.
fn run_prosody(config: &std::path::Path) -> String {
    let mut child = Command::new("prosody")
        .arg("-F")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prosody runs (scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut stream = stream;
        stream.read_to_string(&mut out).expect("output");
    }
    let _ = child.wait();
    out
}

/// In a real Prosody (Debian's package, no network listeners), the module takes the region
/// of a verified token into the session when Jitsi's token event fires, ignores a region
/// that is not a region id or missing (the header's region stays), and on the MUC side puts
/// the signed region into join and change presences in place of the client's own.
#[test]
fn region_module_works_inside_prosody() {
    let dir = tempfile::tempdir().expect("dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::create_dir_all(path("data")).expect("data dir");
    std::fs::create_dir_all(path("certs")).expect("certs dir");
    let config = format!(
        "pidfile = \"{pid}\"\ndata_path = \"{data}\"\ncertificates = \"{certs}\"\n\
         plugin_paths = {{ \"{module}\", \"{check}\" }}\nrun_as_root = true\n\
         interfaces = {{ \"127.0.0.1\" }}\nmodules_enabled = {{}}\n\
         modules_disabled = {{ \"c2s\", \"s2s\", \"s2s_auth_certs\", \"offline\" }}\n\
         log = {{ {{ levels = {{ min = \"info\" }}, to = \"console\" }} }}\n\
         VirtualHost \"meet.test\"\n    authentication = \"anonymous\"\n\
         \x20   modules_enabled = {{ \"geobridge_region\" }}\n\
         Component \"check.meet.test\" \"geobridge_region_check\"\n\
         \x20   modules_enabled = {{ \"geobridge_region\" }}\n",
        pid = path("prosody.pid"),
        data = path("data"),
        certs = path("certs"),
        module = repo_path("deploy/prosody").display(),
        check = repo_path("tests/prosody").display(),
    );
    let config_path = dir.path().join("prosody.cfg.lua");
    std::fs::write(&config_path, config).expect("write config");
    let out = run_prosody(&config_path);
    let checks: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("geobridge-check: "))
        .collect();
    assert_eq!(
        checks,
        [
            "signed eu-west",
            "bad-claim us-east",
            "no-context ap-south",
            "join eu-west",
            "change eu-west",
            "unsigned client-chosen",
            "done",
        ],
        "prosody output:\n{out}"
    );
}

/// `prosody-config` prints the VirtualHost lines for token authentication with geobridge as
/// the key server, taking the app id and domain from the settings.
#[test]
fn prosody_config_prints_the_virtualhost() {
    let (ok, stdout, stderr) = run(command()
        .env("JITSI_URL", "https://meet.acme.test/")
        .env("GEOBRIDGE_JITSI_ISSUER", "AcmeLobby")
        .args([
            "prosody-config",
            "--key-server",
            "http://geobridge.internal:8080/asap",
        ]));
    assert!(ok, "{stderr}");
    for line in [
        "VirtualHost \"meet.acme.test\"",
        "    authentication = \"token\"",
        "    app_id = \"AcmeLobby\"",
        "    asap_key_server = \"http://geobridge.internal:8080/asap\"",
        "    allow_empty_token = false",
        "    modules_enabled = { \"geobridge_region\" }",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing:\n{stdout}"
        );
    }
    let secret = "very-secret-app-secret-0123456789abcdef";
    let (ok, stdout, _) = run(command()
        .env("GEOBRIDGE_JITSI_AUTH", "hs256")
        .env("GEOBRIDGE_JITSI_APP_SECRET", secret)
        .arg("prosody-config"));
    assert!(
        ok && stdout.contains("app_secret = \"<the value of"),
        "{stdout}"
    );
    assert!(!stdout.contains(secret), "the secret is never printed");
}

/// `keygen` prints the next steps: how to serve the key, how to rotate it, and the
/// Prosody configuration command.
#[test]
fn keygen_says_what_to_do_next() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("new.pem");
    let (ok, stdout, stderr) = run(command()
        .args(["keygen", "--bits", "2048", "--kid", "CWMKey-2027", "--out"])
        .arg(&out));
    assert!(ok, "{stderr}");
    for expected in [
        "next steps:",
        "JITSI_RSA_JWT_KEY_FILE=",
        "GEOBRIDGE_JITSI_KEY_ID=CWMKey-2027",
        "[[jitsi.keys]]",
        "kid = \"CWMKey-2027\"",
        "geobridge prosody-config",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
}
