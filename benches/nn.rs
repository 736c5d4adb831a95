//! Forward + backward of the original's networks on the CPU (f32, train mode, cross-entropy),
//! batch 128 of 3×32×32: resnet18 (ImageNet stem, as the original without --SOTA), resnet18
//! with the CIFAR stem (--sota), and the default MLP (width 1024, depth 6).
//! Compare with PyTorch: `python benches/compare_torch_nn.py --threads 2 --rounds 3 --steps 3`
//! times the same step (through `examples/nn_step`) interleaved with tuned PyTorch variants.
//! The thread count (`RAYON_NUM_THREADS`) is part of each benchmark's name.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ndarray::Array4;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ufm::nn::layers::{cross_entropy, Module};
use ufm::nn::models::{Arch, ModelConfig, Net};

fn step(net: &mut Net<f32>, x: &Array4<f32>, y: &[u32]) {
    net.zero_grad();
    let out = net.forward(x.clone(), true).unwrap();
    let (_, g) = cross_entropy(&out.logits, y).unwrap();
    net.backward(&g, None);
}

fn bench(c: &mut Criterion) {
    ufm::nn::keep_freed_memory(); // as `ufm train` does
    let mut rng = StdRng::seed_from_u64(0);
    let x = Array4::from_shape_simple_fn((128, 3, 32, 32), || rng.random_range(-1.0f32..1.0));
    let y: Vec<u32> = (0..128).map(|i| i % 10).collect();
    let mut g = c.benchmark_group("nn");
    // one step takes seconds: flat sampling, 10 samples (criterion's minimum)
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(std::time::Duration::from_secs(10));
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
    for (id, cfg) in [
        (
            "mlp_fwd_bwd_b128",
            ModelConfig {
                arch: Arch::Mlp,
                ..base.clone()
            },
        ),
        ("resnet18_fwd_bwd_b128", base.clone()),
        (
            "resnet18_sota_fwd_bwd_b128",
            ModelConfig {
                sota: true,
                ..base.clone()
            },
        ),
    ] {
        let mut net = Net::<f32>::new(&cfg, 0).unwrap();
        let id = format!("{id}_threads{}", rayon::current_num_threads());
        g.bench_function(&id, |b| b.iter(|| step(&mut net, &x, &y)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
