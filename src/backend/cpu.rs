//! The CPU backend: the reference implementation, delegating to [`UfmProblem`]'s fused,
//! cache-blocked objective/gradient/step/HVP and to [`ClassStats`].

use super::Backend;
use crate::error::{Error, Result};
use crate::metrics::{ClassStats, FeatureStats};
use crate::real::Real;
use crate::ufm::UfmProblem;
use ndarray::ArrayView2;

/// The CPU backend (buffers are host `Vec`s).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

fn same_len(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::shape(what, format!("{b} elements"), format!("{a}")));
    }
    Ok(())
}

impl<T: Real> Backend<T> for CpuBackend {
    type Buffer = Vec<T>;

    fn name(&self) -> String {
        "cpu".into()
    }
    fn alloc(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); len])
    }
    fn upload_into(&self, src: &[T], dst: &mut Vec<T>) -> Result<()> {
        same_len("upload", src.len(), dst.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &Vec<T>, dst: &mut [T]) -> Result<()> {
        same_len("download", src.len(), dst.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn supports(&self, _p: &UfmProblem, _hvp: bool) -> Result<()> {
        Ok(())
    }
    fn value(&self, p: &UfmProblem, x: &Vec<T>) -> Result<f64> {
        p.check_len("point", x)?;
        Ok(p.value(x).to_f64_())
    }
    fn value_grad(&self, p: &UfmProblem, x: &Vec<T>, grad: &mut Vec<T>) -> Result<f64> {
        p.check_len("point", x)?;
        p.check_len("gradient", grad)?;
        Ok(p.value_grad(x, grad).to_f64_())
    }
    fn gd_step(&self, p: &UfmProblem, x: &mut Vec<T>, lr: T) -> Result<(f64, f64)> {
        p.check_len("point", x)?;
        let (f, gn) = p.gd_step_fused(x, lr);
        Ok((f.to_f64_(), gn))
    }
    fn hvp(&self, p: &UfmProblem, x: &Vec<T>, v: &Vec<T>, out: &mut Vec<T>) -> Result<()> {
        p.check_len("point", x)?;
        p.check_len("direction", v)?;
        p.check_len("output", out)?;
        p.hvp(x, v, out);
        Ok(())
    }
    fn class_stats(
        &self,
        features: &Vec<T>,
        rows: usize,
        d: usize,
        labels: &[u32],
        k: usize,
    ) -> Result<FeatureStats> {
        let x = ArrayView2::from_shape((rows, d), features.as_slice()).map_err(|_| {
            Error::shape(
                "features",
                format!("{rows} x {d} = {} elements", rows * d),
                format!("{}", features.len()),
            )
        })?;
        let mut acc = ClassStats::new(k, d);
        acc.push(x, labels)?;
        acc.finish()
    }
}
