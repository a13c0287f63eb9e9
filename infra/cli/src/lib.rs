//! The `jitvm` command: a person's way to jitvm's HTTP API (v1), as a
//! terminal tool. Every command is one or a few API calls; nothing here
//! decides what the API decides.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod show;
pub mod sigv4;
pub mod table;
pub mod wait;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::error::{CliError, exit};

/// Parses the process arguments, runs the command, and returns the exit
/// code, having printed any error as one message on stderr.
pub fn main_exit() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are printed by clap on stdout and are no
            // failure; every other parse error is a usage error.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    if let Command::Completions { shell } = cli.command {
        // Written in one go, so a closed pipe is no panic.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "jitvm", &mut script);
        return match commands::write_stdout(&script) {
            Ok(()) => exit::OK,
            Err(e) => e.exit_code(),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            note(&format!("jitvm: cannot start: {e}"));
            return exit::CONFIG;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => exit::OK,
        Err(e) => {
            note(&format!("jitvm: {e}"));
            e.exit_code()
        }
    }
}

/// One line on stderr; a closed stderr is no reason to panic.
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let overrides = config::Overrides::from_env(cli.config.clone(), cli.endpoint.clone());
    let config = config::load(&overrides)?;
    let api = client::Api::connect(&config).await?;
    commands::run(&api, cli.command, cli.output).await
}
