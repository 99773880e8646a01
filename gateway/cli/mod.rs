//! Command-line verbs: `run`, `check`, and `demo-upstream` for the quickstart.

mod client;
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
        Command::Window { conn, cmd } => with_runtime(window::run(conn, cmd)),
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
