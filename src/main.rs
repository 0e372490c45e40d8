//! `vigil`: one binary for the collector and its tools. It only parses arguments and wires the
//! library crates together.

mod alerts_cmd;
mod analyze;
mod cli;
mod demo;
mod eval;
mod eval_anomaly;
mod gpu_exporter_cmd;
mod loadgen;
mod query_cmd;
mod serve;
mod tui_cmd;

use clap::Parser;

/// glibc's malloc gives each thread that contends an arena of its own (up to 8 per core) and
/// keeps what is freed in them: after the analyzer's queries, a collector's RSS stayed ~370 MiB
/// above what it uses (1,173 MiB against 801 MiB with two arenas, same load, RELIABILITY.md).
/// Two arenas, set before any thread starts; `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
        // exists, so no allocation races with it.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    // One TLS crypto provider for the process, before any HTTP client is built: reqwest's
    // clients (webhooks, scrapes, `vigil query` to an https:// collector) take it from here.
    vigil_analyzer::install_crypto_provider();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(args).await,
            cli::Command::Query(args) => query_cmd::run(args).await,
            cli::Command::Loadgen(args) => loadgen::run(args).await,
            cli::Command::GpuExporter(args) => gpu_exporter_cmd::run(args).await,
            cli::Command::Tui(args) => tui_cmd::run(args).await,
            cli::Command::Alerts(args) => alerts_cmd::run(args).await,
            cli::Command::Demo(args) => demo::run(args).await,
            cli::Command::Eval(args) => eval::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
