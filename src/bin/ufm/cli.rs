//! Command-line definition (clap derive). Subcommand arguments are defined next to their
//! handlers in `cmd_*.rs`.

use clap::{Parser, Subcommand};

/// Unconstrained feature model and neural collapse: solve, certify, probe the landscape,
/// measure NC metrics.
#[derive(Parser, Debug)]
#[command(name = "ufm", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Solve a UFM instance and compare the answer with the closed-form global minimum.
    Solve(crate::cmd_solve::SolveArgs),
    /// Certify global optimality through the convex (nuclear-norm) reformulation; `certify figure` draws the imbalance geometry.
    Certify(crate::cmd_certify::CertifyArgs),
}
