//! Claim: our L-BFGS reaches the same optimum as argmin's L-BFGS (More–Thuente line search) on
//! the same UFM instance — an independent implementation as the reference.

use argmin::core::{CostFunction, Executor as ArgminExecutor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ufm::solver::{Executor, Lbfgs};
use ufm::ufm::{Loss, UfmConfig, UfmProblem};

struct Wrap<'a>(&'a UfmProblem);

impl CostFunction for Wrap<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, x: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.0.value(x))
    }
}

impl Gradient for Wrap<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        let mut g = vec![0.0; x.len()];
        self.0.value_grad(x, &mut g);
        Ok(g)
    }
}

#[test]
fn our_lbfgs_matches_argmins_lbfgs() {
    // Imbalanced, label smoothing: no closed form, so the reference is the other solver.
    for loss in [Loss::CrossEntropy, Loss::LabelSmoothing { alpha: 0.1 }] {
        let p = UfmConfig::with_class_sizes(vec![8, 5, 3, 6], 6)
            .lambdas(5e-3, 5e-3, 5e-3)
            .loss(loss)
            .build()
            .unwrap();
        let x0: Vec<f64> = p.random_point(3, 1.0).unwrap();

        let mut x = x0.clone();
        let ours = Executor {
            tol: 1e-9,
            max_iter: 5000,
            ..Default::default()
        }
        .run(&p, &mut Lbfgs::new(10).unwrap(), &mut x, &mut [])
        .unwrap();

        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
            .with_tolerance_grad(1e-9)
            .unwrap()
            .with_tolerance_cost(0.0)
            .unwrap();
        let res = ArgminExecutor::new(Wrap(&p), solver)
            .configure(|s| s.param(x0.clone()).max_iters(5000))
            .run()
            .unwrap();
        let theirs = res.state().get_best_cost();

        assert!(ours.converged, "{loss}: ours did not converge: {ours:?}");
        let rel = (ours.objective - theirs).abs() / theirs.abs();
        assert!(
            rel < 1e-9,
            "{loss}: ours {} vs argmin {theirs} (rel {rel:e})",
            ours.objective
        );
    }
}
