//! Helpers shared by the integration tests: where the real data lives, whether a GPU test
//! runs, and tiny synthetic data sets in the real files' formats.
//!
//! **Real data.** Tests that need the real MNIST / CIFAR-10 subset are `#[ignore]`d (so that
//! `cargo test` passes on a fresh clone) and have `real_data` in their names; run them with
//! `cargo test -- --ignored real_data`. They find the data through one variable,
//! `UFM_DATA_DIR` (default `../shared/data` next to the crate root), and **fail** with a
//! message saying so when it is missing.
//!
//! **GPU.** Tests that need a CUDA GPU are `#[ignore]`d and have `gpu` in their names (or sit
//! in a `gpu` module); run them with `cargo test -- --ignored gpu`. Without a usable GPU they
//! print `SKIPPED (no GPU): ...` and return, unless `UFM_REQUIRE_GPU=1`, which turns the
//! absence of a GPU into a failure (what `scripts/gpu-check.sh` sets on a GPU machine).

#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};

/// The real data folder: `$UFM_DATA_DIR`, else `<crate root>/../shared/data`. Panics (the
/// test fails) with the place it looked and how to point it elsewhere when it is missing.
pub fn real_data_dir() -> PathBuf {
    let (d, from) = match std::env::var_os("UFM_DATA_DIR") {
        Some(v) => (PathBuf::from(v), "UFM_DATA_DIR"),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
            "the default ../shared/data",
        ),
    };
    assert!(
        d.join("MNIST/raw").is_dir(),
        "real data not found: {} ({from}) has no MNIST/raw/; set UFM_DATA_DIR to the folder \
         holding MNIST/raw/ and cifar10-subset/ (see the README's test section)",
        d.display()
    );
    d
}

/// Whether a GPU test should run with what `probe` returned: `Some` on success; on failure
/// panics when `UFM_REQUIRE_GPU=1`, else prints `SKIPPED (no GPU): ...` and returns `None`.
pub fn gpu_or_skip<T, E: std::fmt::Display>(probe: Result<T, E>) -> Option<T> {
    match probe {
        Ok(g) => Some(g),
        Err(e) => {
            assert!(!gpu_required(), "UFM_REQUIRE_GPU=1 but no usable GPU: {e}");
            println!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

/// `UFM_REQUIRE_GPU=1` (or any value but empty and `0`).
pub fn gpu_required() -> bool {
    std::env::var("UFM_REQUIRE_GPU").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A small seeded generator (SplitMix64), so the fixtures need no particular `rand` version.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A byte.
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
}

/// A learnable image of class `c` (`h × w` grey): low noise plus a bright 6×6 square whose
/// position depends on the class, slightly jittered.
fn class_image(c: usize, h: usize, w: usize, rng: &mut SplitMix) -> Vec<u8> {
    let mut img: Vec<u8> = (0..h * w).map(|_| rng.byte() / 6).collect();
    let (r0, c0) = (4 + (c / 4) * 7, 2 + (c % 4) * 6);
    let (dr, dc) = ((rng.byte() % 2) as usize, (rng.byte() % 2) as usize);
    for r in r0 + dr..(r0 + dr + 6).min(h) {
        for q in c0 + dc..(c0 + dc + 6).min(w) {
            img[r * w + q] = 200 + rng.byte() % 56;
        }
    }
    img
}

fn be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// Labels `0..10` repeated, shuffled by `rng` (every class has `per_class` samples).
fn labels(per_class: usize, rng: &mut SplitMix) -> Vec<u8> {
    let mut y: Vec<u8> = (0..10 * per_class).map(|i| (i % 10) as u8).collect();
    for i in (1..y.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        y.swap(i, j);
    }
    y
}

/// Writes a tiny MNIST in torchvision's layout (`<dir>/MNIST/raw/`, plain IDX files, 28×28)
/// with `train_per_class` / `test_per_class` images of each of the 10 classes, seeded; the
/// classes are separable (see `class_image`). Returns `dir`.
pub fn synthetic_mnist(
    dir: &Path,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
) -> PathBuf {
    let raw = dir.join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    let mut rng = SplitMix(seed);
    for (prefix, m) in [("train", train_per_class), ("t10k", test_per_class)] {
        let y = labels(m, &mut rng);
        let mut img = Vec::new();
        img.extend(be(2051));
        img.extend(be(y.len() as u32));
        img.extend(be(28));
        img.extend(be(28));
        for &c in &y {
            img.extend(class_image(c as usize, 28, 28, &mut rng));
        }
        let mut lab = Vec::new();
        lab.extend(be(2049));
        lab.extend(be(y.len() as u32));
        lab.extend(&y);
        std::fs::write(raw.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(raw.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    }
    dir.to_path_buf()
}

/// Writes a tiny CIFAR-10 (`<dir>/cifar-10-batches-bin/data_batch_1.bin` and
/// `test_batch.bin`, records of 1 label byte + 3×32×32 pixels) with `train_per_class` /
/// `test_per_class` images per class, seeded. Returns `dir`.
pub fn synthetic_cifar(
    dir: &Path,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
) -> PathBuf {
    let cdir = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut rng = SplitMix(seed);
    for (name, m) in [
        ("data_batch_1.bin", train_per_class),
        ("test_batch.bin", test_per_class),
    ] {
        let mut b = Vec::new();
        for c in labels(m, &mut rng) {
            b.push(c);
            for _ in 0..3 {
                b.extend(class_image(c as usize, 32, 32, &mut rng));
            }
        }
        std::fs::write(cdir.join(name), b).unwrap();
    }
    dir.to_path_buf()
}
