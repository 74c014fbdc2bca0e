//! `idemflow`: the command-line tool of the idemflow workflow engine.
//!
//! `idemflow demo` runs the order lifecycle under duplicate deliveries,
//! retries, out-of-order events and races, then checks the engine's
//! invariants. The other subcommands inspect and drive any idemflow database
//! through its *stored* machine definitions, without the user's Rust types.
//!
//! Exit codes: 0 on success, 1 on a user error (one line `error: ...` on
//! stderr) or a failed demo invariant, 2 on a usage error.

mod cli;
mod commands;
mod demo;
mod evolution;
mod render;
mod timers;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// A user-facing error: printed as one line `error: <message>`, exit code 1.
#[derive(Debug)]
pub struct CliError {
    message: String,
}

impl CliError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always one line, whatever the underlying error printed.
        let one_line: Vec<&str> = self.message.split_whitespace().collect();
        f.write_str(&one_line.join(" "))
    }
}

impl From<idemflow::Error> for CliError {
    fn from(error: idemflow::Error) -> Self {
        let mut message = error.to_string();
        // `Storage` wraps an I/O error; say what it was about, once.
        if let idemflow::Error::Storage { source, .. } = &error {
            if !message.contains(&source.to_string()) {
                message = format!("{message}: {source}");
            }
        }
        CliError::new(message)
    }
}

/// The result of a subcommand.
pub type CliResult<T = ()> = Result<T, CliError>;

fn main() -> ExitCode {
    // Usage errors (and --help / --version) exit here: 2 and 0, clap's defaults.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Machines(args) => commands::machines(&args),
        Command::Show(args) => commands::show(&args),
        Command::Graph(args) => commands::graph(&args),
        Command::Outbox(args) => commands::outbox(&args),
        Command::Definitions(args) => evolution::definitions(&args),
        Command::Migrate(args) => evolution::migrate(&args),
        Command::Timers(args) => timers::timers(&args),
        Command::PurgeKeys(args) => commands::purge_keys(&args),
        Command::Create(args) => commands::create(&args),
        Command::Apply(args) => commands::apply(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
