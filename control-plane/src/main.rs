//! The `troupe` binary: server and CLI in one.

use clap::Parser;

/// mimalloc rather than the system allocator: a write allocates and frees many small buffers
/// on several threads (HTTP/2 frames, protobuf, the etcd client), where glibc's malloc spent a
/// sixth of the server's time (`troupe-bench write`, README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
