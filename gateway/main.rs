//! The `menshen` binary: see `menshen --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    menshen::cli::main()
}
