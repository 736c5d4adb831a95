//! Sweeps (placeholder, filled in below).
