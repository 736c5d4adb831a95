use ufm::certify::*;
use ufm::ufm::{global_minimum, Loss, UfmConfig};

#[test]
fn explore() {
    for (loss, lb, bias, sizes, d) in [
        (Loss::CrossEntropy, 5e-3, true, vec![10; 4], 8),
        (Loss::CrossEntropy, 0.0, true, vec![10; 4], 8),
        (Loss::Mse, 0.0, true, vec![10; 4], 8),
        (Loss::Mse, 0.0, false, vec![10; 4], 8),
        (Loss::CrossEntropy, 5e-4, true, vec![20; 10], 12),
        (Loss::CrossEntropy, 5e-4, true, vec![500, 500, 50, 50], 4),
        (Loss::LabelSmoothing { alpha: 0.1 }, 0.0, true, vec![500, 500, 50, 50], 4),
        (Loss::Mse, 1e-3, true, vec![500, 500, 50, 50], 4),
    ] {
        let p = UfmConfig::with_class_sizes(sizes, d).lambdas(5e-3, 5e-3, lb).loss(loss).bias(bias).build().unwrap();
        for repr in [Representation::ClassCollapsed, Representation::PerSample] {
            let cp = ConvexProblem::new(&p, repr).unwrap();
            let s = solve_convex(&cp, &ConvexOptions::default(), None).unwrap();
            let gm = global_minimum(&p).map(|g| g.objective);
            println!("{loss} lb={lb} bias={bias} {repr:?}: P={:.15} D={:.15} gap={:.2e} it={} restarts={} L={:.3} conv={} {:.3}s sv={:?} cf={:?}",
                s.primal, s.lower_bound, s.gap, s.iterations, s.restarts, s.lipschitz, s.converged, s.seconds, &s.singular_values, gm);
        }
    }
}
