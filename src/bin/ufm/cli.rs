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
    /// Neural-collapse metrics (NC1-NC4 and variants) of features from any network.
    Metrics(crate::cmd_metrics::MetricsArgs),
    /// Hessian spectrum at a solution (or a loaded point) vs the rotation-orbit dimension.
    Hessian(crate::cmd_landscape::HessianArgs),
    /// Catalogue of certified strict saddles (origin, rank-r) with spectra and escape tests.
    Saddles(crate::cmd_landscape::SaddlesArgs),
    /// Random-init sweeps over (d, lambda) x optimizers; `merge` shards; `figures` for paper_figs/.
    Landscape(crate::cmd_landscape::LandscapeArgs),
}
