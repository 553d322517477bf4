use std::process::ExitCode;

use clap::Parser;
use netshim::cli::{self, Cli, Format};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETSHIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.global.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().init(),
    }
    let json = cli.global.output == Format::Json;
    // A runtime shows a failing hook's stderr to the user: one line, no hints.
    let hook = matches!(cli.command, cli::Command::OciHook { .. });
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            eprintln!("netshim: error: {e}");
            if let Some(h) = cli::hint(&e).filter(|_| !hook) {
                eprintln!("netshim: hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}
