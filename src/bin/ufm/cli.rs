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
    /// Certify global optimality through the convex (nuclear-norm) reformulation; `certify figure` draws the imbalance geometry.
    Certify(crate::cmd_certify::CertifyArgs),
    /// Deep UFMs: `linear` (certified optimum), `relu` (DNC vs low-rank SRG), `figures`.
    Deep(crate::cmd_deep::DeepArgs),
    /// Train a network (MLP / ResNet-18) on MNIST or CIFAR-10 with hand-written layers.
    Train(crate::cmd_train::TrainArgs),
    /// NC metrics and accuracies of every checkpoint of a training run.
    Validate(crate::cmd_validate::ValidateArgs),
    /// Plot NC1..NC4 and accuracies against epoch for one or more validated runs.
    Plot(crate::cmd_plot::PlotArgs),
    /// One-vs-rest margins (generalized NC, K > d+1) of a classifier or a named spherical code.
    Margin(crate::cmd_margin::MarginArgs),
    /// Distance of the certified CE optimum to the SELI geometry of imbalanced classes; `seli figure`.
    Seli(crate::cmd_seli::SeliArgs),
    /// Regression UFM: closed form vs L-BFGS and NRC1-3; `regress metrics` for files.
    Regress(crate::cmd_regress::RegressArgs),
    /// Normalized UFM on spheres: Riemannian trust region, closed form, Hessian certificates.
    Sphere(crate::cmd_sphere::SphereArgs),
}
