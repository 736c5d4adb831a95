//! The unconstrained feature model: problem definition, losses, objective with exact derivatives,
//! closed-form optima and simplex ETFs.

pub mod closed_form;
pub mod etf;
mod fused;
pub mod loss;
pub mod objective;
pub mod problem;

pub use closed_form::{global_minimum, Frame, GlobalMinimum};
pub use etf::{orthogonal_frame, simplex_etf, EtfEmbedding};
pub use loss::Loss;
pub use problem::{UfmConfig, UfmProblem};
