//! The `geobridge` command: parse the command line, set up logging, load settings, run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use geobridge::config::{EXIT_BAD_CONFIG, LogFormat, Settings};
use geobridge::{app, geo, token};

/// Chooses the Jitsi Videobridge region for a call and signs the Jitsi token for it.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML settings file; the built-in example when absent.
    #[arg(long, global = true, env = "GEOBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve,
    /// Write a new RSA signing key (PKCS#8 PEM, mode 0600) and print its public half.
    Keygen {
        /// Where to write the private key; never overwritten.
        #[arg(long, default_value = "jitsi-rsa.pem")]
        out: PathBuf,
        /// Modulus size: 2048, 3072, 4096 or 8192.
        #[arg(long, default_value_t = 4096)]
        bits: usize,
        /// Key id (`kid`) the key will be published under.
        #[arg(long, default_value = "CWMKey")]
        kid: String,
    },
    /// Print what geobridge knows of each address and which region it would choose.
    Lookup {
        /// IPv4 or IPv6 addresses.
        #[arg(required = true)]
        ips: Vec<String>,
    },
    /// Validate the settings and print them, secrets masked.
    CheckConfig,
    /// Print the lines for Prosody's config: token authentication against this service.
    ProsodyConfig {
        /// Where Prosody reaches geobridge's key URL; `http://<server.listen>/asap` if absent.
        #[arg(long)]
        key_server: Option<String>,
        /// The Jitsi VirtualHost; the host of `jitsi.url` if absent.
        #[arg(long)]
        domain: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Keygen { out, bits, kid } = &cli.command {
        return keygen(out, *bits, kid);
    }
    let env = match environment() {
        Ok(env) => env,
        Err(problems) => return bad_config(&problems),
    };
    let unknown = geobridge::config::unknown_variables(&env);
    let settings = match Settings::load(cli.config.as_deref(), &env) {
        Ok(settings) => settings,
        Err(problems) => {
            for name in &unknown {
                eprintln!("geobridge: {name} is not a variable geobridge reads (a typo?)");
            }
            return bad_config(&problems);
        }
    };
    init_logging(settings.server.log_format);
    for name in unknown {
        tracing::warn!(
            variable = name,
            "not a variable geobridge reads (a typo?); ignored"
        );
    }
    match cli.command {
        Command::Serve => serve(settings),
        Command::CheckConfig => {
            let problems = app::check(&settings);
            if !problems.is_empty() {
                return bad_config(&geobridge::config::Problems(problems));
            }
            println!("# settings from {}", settings.source);
            println!("{}", toml::to_string_pretty(&settings).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Lookup { ips } => lookup(&settings, &ips),
        Command::ProsodyConfig { key_server, domain } => {
            print!("{}", app::prosody_config(&settings, key_server, domain));
            ExitCode::SUCCESS
        }
        Command::Keygen { .. } => unreachable!("handled above"),
    }
}

/// The async runtime: one worker per core the process may run on. On a single core the
/// single-threaded scheduler is used; a multi-threaded one would only add hand-offs between
/// the worker and the thread that started it.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

fn serve(settings: Settings) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("geobridge: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let state = match app::prepare(&settings).await {
            Ok(state) => state,
            Err(problems) => return bad_config(&problems),
        };
        match app::serve(settings, state).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "geobridge stopped on an error");
                ExitCode::FAILURE
            }
        }
    });
    // Blocking work still running, such as the check of the whole GeoIP file after start-up
    // (seconds of reading), does not hold up the exit: none of it writes.
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}

/// How long the exit waits for blocking work that is still running.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn lookup(settings: &Settings, ips: &[String]) -> ExitCode {
    let database = match geo::Database::open(&settings.geo.database) {
        Ok(database) => database,
        Err(error) => return bad_config(&geobridge::config::Problems(vec![error.to_string()])),
    };
    let mut status = ExitCode::SUCCESS;
    println!("# assuming every registered bridge is healthy");
    for text in ips {
        match text.parse() {
            Ok(ip) => println!("{}", app::describe(settings, &database, ip)),
            Err(_) => {
                eprintln!("{text}\tnot an IP address");
                status = ExitCode::from(2);
            }
        }
    }
    status
}

fn keygen(out: &std::path::Path, bits: usize, kid: &str) -> ExitCode {
    match token::keygen_report(out, bits, kid) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("geobridge keygen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The process's environment as text. Variables that are not UTF-8 are left out, except
/// those geobridge reads, which are refused by name: their values are never printed.
fn environment() -> Result<HashMap<String, String>, geobridge::config::Problems> {
    let mut env = HashMap::new();
    let mut problems = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => {
                env.insert(name, value);
            }
            (Ok(name), Err(_)) if geobridge::config::reads_variable(&name) => {
                problems.push(format!("{name}: the value is not UTF-8 text"));
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(geobridge::config::Problems(problems))
    }
}

fn bad_config(problems: &geobridge::config::Problems) -> ExitCode {
    eprintln!("geobridge: {problems}");
    ExitCode::from(EXIT_BAD_CONFIG as u8)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
