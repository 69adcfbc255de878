//! sentinel-master: a supervisor that creates the shared-memory host table and runs the
//! collector and the http server as separate processes (this binary with `--role`).

use clap::Parser;

use sentinel_master::config::{Cli, Command, Config, Role};
use sentinel_master::{collector, http, operator, supervisor};

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sentinel-master: {e:#}");
            // sysexits' EX_CONFIG: the unit's RestartPreventExitStatus=78 stops systemd from
            // restarting a master that cannot work until its configuration is fixed.
            return std::process::ExitCode::from(78);
        }
    };
    if let Some(command) = &cli.command {
        let (name, answer) = match command {
            Command::RemoveHost { id } => ("remove-host", operator::remove_host(&config, id)),
            Command::ForgetKey { id } => ("forget-key", operator::forget_key(&config, id)),
        };
        return match answer {
            Ok(answer) => {
                println!("{answer}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sentinel-master {name}: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let result = match cli.role {
        None => supervisor::run(config),
        Some(Role::Collector) => collector::run(config),
        Some(Role::Http) => http::run(config),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Plain, so it is seen even with SENTINEL_LOG=off.
            eprintln!("sentinel-master: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SENTINEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
