//! Command-line verbs: `run`, `check`, and `demo-upstream` for the quickstart.

mod block;
mod client;
mod reload;
mod summary;
mod window;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "menshen", version, about = "Access gateway for maintenance and admin interfaces")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum LogCmd {
    /// Check the hash chain and signatures of a log directory. Exit 0 intact,
    /// 1 tampered or missing (names the first bad file and line), 2 unreadable.
    Verify {
        dir: PathBuf,
        /// The gateway's log signing key (hex, or a file holding it), as `menshen check`
        /// prints it. Without it the key is taken from the log itself.
        #[arg(long)]
        pubkey: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve. SIGTERM/SIGINT drain in-flight requests, flush the log, and exit.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config and print who may reach what; exit 1 listing every problem.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print a fresh random token and its token_sha256 for an [[account]].
    Token {
        /// The account it is for (the token then starts with `NAME.`).
        #[arg(long)]
        account: Option<String>,
    },
    /// Access windows, through the admin API (MENSHEN_ADMIN_URL, MENSHEN_TOKEN).
    Window {
        #[command(flatten)]
        conn: window::Connection,
        #[command(subcommand)]
        cmd: window::WindowCmd,
    },
    /// The runtime block list, through the admin API: `menshen block add CIDR --reason R
    /// [--duration 2h]`, `remove CIDR`, `list`.
    Block {
        #[command(flatten)]
        conn: window::Connection,
        #[command(subcommand)]
        cmd: block::BlockCmd,
    },
    /// Re-read the running gateway's config file and apply it, through the admin API
    /// (admins only). Prints what changed; exit 1 listing every problem if it was refused
    /// (the running config stays in force). `systemctl reload menshen` (SIGHUP) does the
    /// same without a token; its outcome is in the log.
    Reload {
        #[command(flatten)]
        conn: window::Connection,
    },
    /// The log: `menshen log verify DIR`.
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
    /// A plain-HTTP upstream that echoes what it receives (for the quickstart).
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MENSHEN_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match cli.command {
        Command::Check { config } => summary::check(&config),
        Command::Token { account } => window::token(account),
        Command::Log { cmd: LogCmd::Verify { dir, pubkey } } => verify(&dir, pubkey.as_deref()),
        Command::Window { conn, cmd } => with_runtime(window::run(conn, cmd)),
        Command::Reload { conn } => with_runtime(reload::run(conn)),
        Command::Block { conn, cmd } => with_runtime(block::run(conn, cmd)),
        Command::Run { config } => with_runtime(async move {
            match crate::server::run(&config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("menshen: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Command::DemoUpstream { bind } => with_runtime(async move {
            match tokio::net::TcpListener::bind(bind).await {
                Ok(l) => {
                    println!("menshen demo upstream on http://{bind}");
                    crate::demo::serve(l).await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("menshen: cannot listen on {bind}: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn with_runtime(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    // On one core (a small box, or pinned) a single-threaded scheduler does the same
    // work without cross-thread wake-ups; blocking work still goes to spawn_blocking.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("menshen: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify(dir: &std::path::Path, pubkey: Option<&str>) -> ExitCode {
    let key = match pubkey {
        None => None,
        Some(k) if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) => Some(k.to_string()),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                eprintln!("menshen: --pubkey {path:?} is neither 64 hex digits nor a readable file: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let started = std::time::Instant::now();
    match crate::audit::verify::verify(dir, key.as_deref()) {
        Ok(r) => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "log OK: {} records in {} files ({:.0} records/s)",
                r.records,
                r.files,
                r.records as f64 / secs.max(1e-9)
            );
            match r.last_signed_seq {
                Some(s) => println!(
                    "signed: {} checkpoints, the last at seq {s}; {} record(s) after it are chained, not yet signed",
                    r.checkpoints, r.unsigned_tail
                ),
                None => {
                    println!("signed: no checkpoint yet; {} record(s) are chained, not yet signed", r.unsigned_tail)
                }
            }
            if r.prunes > 0 || r.recoveries > 0 {
                println!("prune records: {}; crash recoveries: {}", r.prunes, r.recoveries);
            }
            println!("key: {}", r.pubkey);
            for w in &r.warnings {
                println!("WARNING: {w}");
            }
            if r.pubkey_from_log {
                println!("note: the key was taken from the log itself; pass --pubkey (from `menshen check`) to rule out a complete rewrite");
            }
            ExitCode::SUCCESS
        }
        Err(e @ crate::audit::verify::Failure::Tampered { .. }) => {
            println!("TAMPERED: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("menshen: {e}");
            ExitCode::from(2)
        }
    }
}
