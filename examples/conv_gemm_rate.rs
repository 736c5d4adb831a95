//! Single-thread f32 GEMM rate (faer, as `nn::layers::gemm_seq` calls it) on the im2col GEMM
//! shapes of resnet18's CIFAR-stem convolutions (batch 128 of 32×32; one image per group at
//! 32×32 and 16×16, 4 and 16 at 8×8 and 4×4), in GFLOP/s: forward $W X_\text{col}$, weight
//! gradient $\delta X_\text{col}^\top$, input gradient $W^\top\delta$. Compare with the FMA peak
//! that `cargo run --release --example ufm_floor` prints. (The stride-1 3×3 convolutions now run
//! by Winograd, `nn::layers::winograd`; this measures what im2col + GEMM can reach.)
//!
//!     cargo run --release --example conv_gemm_rate
use ndarray::Array2;
use std::time::Instant;
use ufm::nn::layers::gemm_seq;

fn rate(m: usize, k: usize, n: usize, ta: bool, tb: bool) -> f64 {
    let a = if ta {
        Array2::<f32>::from_elem((k, m), 0.5)
    } else {
        Array2::from_elem((m, k), 0.5)
    };
    let b = if tb {
        Array2::<f32>::from_elem((n, k), 0.25)
    } else {
        Array2::from_elem((k, n), 0.25)
    };
    let mut c = Array2::<f32>::zeros((m, n));
    let (av, bv) = (
        if ta { a.t() } else { a.view() },
        if tb { b.t() } else { b.view() },
    );
    let flops = 2.0 * (m * k * n) as f64;
    let reps = ((2e9 / flops) as usize).max(3);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..reps {
            gemm_seq(1.0, av, bv, false, c.view_mut());
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    flops / best * 1e-9
}

fn main() {
    println!(
        "{:>5} {:>5} {:>5}  {:>8} {:>8} {:>8}",
        "m", "k", "n", "fwd", "dW", "dX"
    );
    // (out, C*9, cols): layer1..layer4 at G images per group.
    for &(o, ck, cols) in &[
        (64, 576, 1024),
        (128, 1152, 256),
        (256, 2304, 256),
        (512, 4608, 256),
    ] {
        let fwd = rate(o, ck, cols, false, false); // W · Xcol
        let dw = rate(o, cols, ck, false, true); // δ · Xcolᵀ
        let dx = rate(ck, o, cols, true, false); // Wᵀ · δ
        println!("{o:>5} {ck:>5} {cols:>5}  {fwd:8.1} {dw:8.1} {dx:8.1}");
    }
}
