//! Times forward + backward training steps (train mode, cross-entropy, f32, batch 128 of
//! 3×32×32, seeded) of one network and prints the seconds of each step as JSON (`seconds`:
//! wall clock; `cpu_seconds`, on Unix: CPU time of the whole process, which on a shared
//! machine is the steadier measure of single-threaded work); the timer
//! behind `benches/compare_torch_nn.py` (the criterion bench `benches/nn.rs` times the same
//! step).
//!
//! ```text
//! cargo run --release --example nn_step -- --model resnet18_sota --steps 3 --threads 2
//! ```
//!
//! Models: `mlp` (width 1024, depth 6), `resnet18` (ImageNet stem), `resnet18_sota` (CIFAR stem).
//! One untimed warm-up step runs first.

use ndarray::Array4;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::Instant;
use ufm::nn::layers::{cross_entropy, Module};
use ufm::nn::models::{Arch, ModelConfig, Net};

/// Wall seconds and CPU seconds (where known) of one step.
type Step = (f64, Option<f64>);

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // As `ufm train` does (and benches/compare_torch_nn.py does for PyTorch).
    ufm::nn::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let model = get("--model", "resnet18_sota");
    let steps: usize = get("--steps", "3").parse()?;
    let threads: usize = get("--threads", "2").parse()?;
    let base = ModelConfig {
        arch: Arch::Resnet18,
        width: 1024,
        depth: 6,
        n_classes: 10,
        bias: true,
        etf_classifier: false,
        fixdim: 0,
        sota: false,
    };
    let cfg = match model.as_str() {
        "mlp" => ModelConfig {
            arch: Arch::Mlp,
            ..base
        },
        "resnet18" => base,
        "resnet18_sota" => ModelConfig { sota: true, ..base },
        other => return Err(format!("unknown --model {other}").into()),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut rng = StdRng::seed_from_u64(0);
    let x = Array4::from_shape_simple_fn((128, 3, 32, 32), || rng.random_range(-1.0f32..1.0));
    let y: Vec<u32> = (0..128).map(|i| i % 10).collect();
    let mut net = Net::<f32>::new(&cfg, 0)?;
    let times = pool.install(
        || -> Result<Vec<Step>, Box<dyn std::error::Error + Send + Sync>> {
            let mut times = Vec::new();
            for s in 0..=steps {
                let (t0, c0) = (Instant::now(), cpu_time());
                net.zero_grad();
                let out = net.forward(x.clone(), true)?;
                let (_, g) = cross_entropy(&out.logits, &y)?;
                net.backward(&g, None);
                if s > 0 {
                    times.push((
                        t0.elapsed().as_secs_f64(),
                        cpu_time().zip(c0).map(|(a, b)| a - b),
                    ));
                }
            }
            Ok(times)
        },
    )?;
    let wall: Vec<f64> = times.iter().map(|t| t.0).collect();
    let cpu: Option<Vec<f64>> = times.iter().map(|t| t.1).collect();
    let cpu = cpu.map_or(String::new(), |c| format!(", \"cpu_seconds\": {c:?}"));
    println!("{{\"model\": \"{model}\", \"threads\": {threads}, \"seconds\": {wall:?}{cpu}}}");
    Ok(())
}

/// CPU seconds used by the process so far (all threads), where the platform tells.
#[cfg(unix)]
fn cpu_time() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(not(unix))]
fn cpu_time() -> Option<f64> {
    None
}
