//! Claim: bad input gives a clear error (naming the flag and what to do), never a panic.

use ufm::solver::{solve, Executor, GradientDescent, OptimizerSpec, SolveSpec};
use ufm::ufm::{Loss, UfmConfig};
use ufm::Error;

#[test]
fn invalid_problems_name_the_offending_flag() {
    let msg = |c: UfmConfig| c.build().unwrap_err().to_string();
    assert!(msg(UfmConfig::balanced(0, 5, 3)).contains("`classes`"));
    assert!(msg(UfmConfig::balanced(3, 5, 0)).contains("`dim`"));
    assert!(msg(UfmConfig::balanced(3, 5, 2).lambdas(-1e-3, 1e-3, 0.0)).contains("`lambda-w`"));
    assert!(
        msg(UfmConfig::balanced(3, 5, 2).lambdas(1e-3, f64::INFINITY, 0.0)).contains("`lambda-h`")
    );
    assert!(msg(UfmConfig::balanced(3, 5, 2).lambdas(1e-3, 1e-3, -2.0)).contains("`lambda-b`"));
    assert!(msg(UfmConfig::balanced(3, 0, 2)).contains("no samples"));
    assert!(
        msg(UfmConfig::balanced(3, 5, 2).loss(Loss::LabelSmoothing { alpha: 1.0 }))
            .contains("alpha")
    );
}

#[test]
fn unknown_names_are_rejected_with_the_alternatives() {
    let e = "hinge".parse::<Loss>().unwrap_err().to_string();
    assert!(e.contains("hinge") && e.contains("ce, mse"), "{e}");
    let e = OptimizerSpec::parse("adamw", 0.1, 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("adamw") && e.contains("lbfgs"), "{e}");
    assert!("f16".parse::<ufm::solver::Precision>().is_err());
}

#[test]
fn divergence_is_an_error_that_says_which_step_size_to_lower() {
    let p = UfmConfig::balanced(4, 10, 6).build().unwrap();
    let spec = SolveSpec {
        optimizer: OptimizerSpec::Gd { lr: 1e4 },
        max_iter: 1000,
        ..SolveSpec::default()
    };
    let err = match solve(&p, &spec, None) {
        Err(e) => e,
        Ok(_) => panic!("gradient descent with lr = 1e4 should diverge"),
    };
    assert!(matches!(err, Error::Diverged { .. }), "{err:?}");
    let m = err.to_string();
    assert!(m.contains("--lr") && m.contains("10000"), "{m}");
}

#[test]
fn non_finite_or_misshapen_starting_points_are_rejected() {
    let p = UfmConfig::balanced(3, 2, 2).build().unwrap();
    let mut x: Vec<f64> = p.random_point(0, 1.0).unwrap();
    x[0] = f64::NAN;
    let mut gd = GradientDescent::fixed(0.1).unwrap();
    let e = Executor::default()
        .run(&p, &mut gd, &mut x, &mut [])
        .unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    let mut short = vec![0.0f64; 3];
    let e = Executor::default()
        .run(&p, &mut gd, &mut short, &mut [])
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = solve(&p, &SolveSpec::default(), Some(vec![0.0; 5]))
        .err()
        .expect("wrong length must fail");
    assert!(e.to_string().contains("parameters"));
    assert!(GradientDescent::<f64>::fixed(-1.0).is_err());
    assert!(p.random_point::<f64>(0, f64::NAN).is_err());
}
