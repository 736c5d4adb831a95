//! The `ufm` command-line tool: a thin layer over the `ufm` library.
//! Each subcommand lives in its own `cmd_*.rs` file; errors become `Error: ...` and exit code 1.

mod cli;
mod cmd_certify;
mod cmd_deep;
mod cmd_landscape;
mod cmd_margin;
mod cmd_metrics;
mod cmd_plot;
mod cmd_regress;
mod cmd_seli;
mod cmd_solve;
mod cmd_sphere;
mod cmd_train;
mod cmd_validate;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `println!` into a closed pipe (`ufm solve --json | head`) panics;
    // restore the default so the process simply ends, like other Unix tools.
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Solve(args) => cmd_solve::run(args),
        cli::Command::Metrics(args) => cmd_metrics::run(args),
        cli::Command::Hessian(args) => cmd_landscape::run_hessian(args),
        cli::Command::Saddles(args) => cmd_landscape::run_saddles(args),
        cli::Command::Landscape(args) => cmd_landscape::run_landscape(args),
        cli::Command::Certify(args) => cmd_certify::run(args),
        cli::Command::Deep(args) => cmd_deep::run(args),
        cli::Command::Train(args) => cmd_train::run(args),
        cli::Command::Validate(args) => cmd_validate::run(args),
        cli::Command::Plot(args) => cmd_plot::run(args),
        cli::Command::Margin(args) => cmd_margin::run(args),
        cli::Command::Seli(args) => cmd_seli::run(args),
        cli::Command::Regress(args) => cmd_regress::run(args),
        cli::Command::Sphere(args) => cmd_sphere::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", chain_message(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes joined by `: `, skipping a cause whose text the message already
/// holds (the library's errors quote their source, e.g. `cannot read F: No such file`).
fn chain_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg
}
