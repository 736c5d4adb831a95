//! The crate's single error type.
//!
//! Every fallible library function returns [`Result<T>`]. Messages say what was wrong *and* what
//! to do about it (which flag to change, which file is bad), because they reach users verbatim
//! through the `ufm` binary as `Error: {message}`.

use std::path::PathBuf;

/// Everything that can go wrong in `ufm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its valid range (zero classes, negative λ, ...).
    #[error("invalid value for `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter (as spelled on the command line where there is a flag).
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Arrays that must agree in shape do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        /// Which input.
        what: String,
        /// The shape that was required.
        expected: String,
        /// The shape that was given.
        got: String,
    },
    /// A NaN or infinity where finite numbers are required.
    #[error("non-finite value (NaN or Inf) in {what}")]
    NonFinite {
        /// Where it was found (file, array, index).
        what: String,
    },
    /// A solver produced a non-finite or exploding iterate.
    #[error("{solver} diverged at iteration {iter} (objective {value}): {hint}")]
    Diverged {
        /// The solver's name.
        solver: String,
        /// The iteration at which it was detected.
        iter: usize,
        /// The offending objective value.
        value: f64,
        /// What to change (for example which step size to lower).
        hint: String,
    },
    /// A numerical routine failed (no convergence of an eigensolver, singular system, ...).
    #[error("numerical failure in {what}: {reason}")]
    Numerical {
        /// The routine.
        what: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// `read`, `write`, `create`, ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its contents are malformed or of the wrong kind.
    #[error("bad file {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Labels outside `0..K`, a class without samples, and similar data errors.
    #[error("bad data: {0}")]
    Data(String),
    /// A requested feature is not available in this configuration.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The CUDA driver, NVRTC or a GPU is missing.
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    /// A CUDA call failed.
    #[error("CUDA error in {context}: {reason}")]
    Cuda {
        /// Kernel / module / API call.
        context: String,
        /// The driver's message.
        reason: String,
    },
    /// JSON (de)serialisation failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn param(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            got: got.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Numerical`].
    pub fn numerical(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Numerical {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// At most `max` items of a list for a message, as `[a, b, c]`, or `[a, b, c, … and 97 more]`
/// when there are more: an error must stay short whatever the input (a list of every empty
/// class among $10^9$ would be gigabytes).
pub fn capped_list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>, max: usize) -> String {
    let mut shown = Vec::new();
    let mut more = 0usize;
    for it in items {
        if shown.len() < max {
            shown.push(it.to_string());
        } else {
            more += 1;
        }
    }
    if more > 0 {
        shown.push(format!("… and {more} more"));
    }
    format!("[{}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn capped_list_shows_a_few_and_counts_the_rest() {
        assert_eq!(super::capped_list([3], 8), "[3]");
        assert_eq!(super::capped_list(1..=3, 3), "[1, 2, 3]");
        assert_eq!(super::capped_list(1..=1000, 2), "[1, 2, … and 998 more]");
        assert_eq!(super::capped_list(Vec::<u8>::new(), 2), "[]");
    }
}
