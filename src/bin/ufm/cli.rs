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
    /// Train a network (MLP / ResNet-18) on MNIST or CIFAR-10 with hand-written layers.
    Train(crate::cmd_train::TrainArgs),
    /// NC metrics and accuracies of every checkpoint of a training run.
    Validate(crate::cmd_validate::ValidateArgs),
    /// Plot NC1..NC4 and accuracies against epoch for one or more validated runs.
    Plot(crate::cmd_plot::PlotArgs),
}
