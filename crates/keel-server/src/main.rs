//! The `keel` binary: an etcd v3 compatible server. Takes etcd's flags (see `keel --help`).

use clap::Parser;
use keel_server::config::{Command, Flags, LogOutput, ServerConfig};
use std::process::ExitCode;

/// Exit status for invalid flags (etcd's and clap's convention).
const EXIT_BAD_FLAGS: u8 = 2;

fn init_logging(config: &ServerConfig) {
    // A validated level name, applied to every crate (keel's and its dependencies').
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (config.log_json, config.log_output) {
        (false, LogOutput::Stderr) => builder.with_writer(std::io::stderr).init(),
        (false, LogOutput::Stdout) => builder.with_writer(std::io::stdout).init(),
        (true, LogOutput::Stderr) => builder.json().with_writer(std::io::stderr).init(),
        (true, LogOutput::Stdout) => builder.json().with_writer(std::io::stdout).init(),
    }
    if config.pprof_requested {
        tracing::warn!("--enable-pprof is ignored: keel has no Go profiler endpoint");
    }
}

async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The flags from the command line, or from `--config-file` when it is given.
fn flags() -> Result<Flags, String> {
    let flags = Flags::parse();
    let Some(path) = &flags.config_file else {
        return Ok(flags);
    };
    let args = keel_server::config_file::command_line("keel", path)?;
    Flags::try_parse_from(args).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let flags = match flags() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("keel: error: {e}");
            return ExitCode::from(EXIT_BAD_FLAGS);
        }
    };
    if let Some(Command::Snapshot(command)) = flags.command {
        return match keel_server::snapshot_cli::run(command) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keel: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match flags.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keel: error: {e}");
            return ExitCode::from(EXIT_BAD_FLAGS);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keel_server::server::run(&config, stop_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "keel stopped");
            eprintln!("keel: error: {e}");
            ExitCode::FAILURE
        }
    }
}
