//! The `troupe` binary: server and CLI in one.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = troupe_control_plane::cli::Args::parse();
    troupe_control_plane::cli::init_tracing(&args);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(troupe_control_plane::cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
