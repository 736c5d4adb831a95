//! Files written by NumPy (tests/fixtures/metrics/make_fixtures.py) are read correctly: every
//! dtype and order, streamed in chunks that cross row boundaries, and bundles.

use ndarray::Array2;
use std::path::{Path, PathBuf};
use ufm::features::{self, FeatureSource};
use ufm::metrics::{FeatureChunk, FeatureStream};

const N: usize = 23;
const D: usize = 6;
const K: usize = 4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name)
}

/// The formulas of make_fixtures.py.
fn label(i: usize) -> u32 {
    ((7 * i + i / 5) % K) as u32
}
fn value(i: usize, j: usize) -> f64 {
    0.25 * (i * D + j) as f64 - 3.0 + if label(i) as usize == j % K { 2.0 } else { 0.0 }
}

/// All rows of a source, collected through chunks of `rows` rows, as f64.
fn collect(src: &dyn FeatureStream, rows: usize) -> (Array2<f64>, bool) {
    let mut out = Array2::zeros((src.n_rows(), src.feature_dim()));
    let mut is_f32 = false;
    src.for_each_chunk(rows, &mut |r0, c| {
        match c {
            FeatureChunk::F32(a) => {
                is_f32 = true;
                for ((i, j), &v) in a.indexed_iter() {
                    out[[r0 + i, j]] = v as f64;
                }
            }
            FeatureChunk::F64(a) => {
                for ((i, j), &v) in a.indexed_iter() {
                    out[[r0 + i, j]] = v;
                }
            }
        }
        Ok(())
    })
    .unwrap();
    (out, is_f32)
}

fn assert_features(src: &FeatureSource, want_f32: bool) {
    assert_eq!((src.n_rows(), src.feature_dim()), (N, D));
    for rows in [1, 5, 23, 100] {
        let (h, is_f32) = collect(src, rows);
        assert_eq!(is_f32, want_f32);
        for i in 0..N {
            for j in 0..D {
                assert_eq!(h[[i, j]], value(i, j), "row {i} col {j}, chunks of {rows}");
            }
        }
    }
}

#[test]
fn npy_features_in_every_dtype_and_order_are_streamed_correctly() {
    for (name, f32_) in [
        ("h_f32_c.npy", true),
        ("h_f32_f.npy", true),
        ("h_f64_c.npy", false),
        ("h_f64_f.npy", false),
        ("h_f64_be.npy", false),
    ] {
        let src = FeatureSource::open_npy(&fixture(name)).unwrap();
        assert!(src.is_streamed());
        // C order in the machine's byte order is read in place through a memory map; the
        // other layouts (and `--no-mmap`) by chunked reads: both must give the same values.
        let native_c = name.ends_with("_c.npy") && cfg!(target_endian = "little");
        assert_eq!(src.is_mapped(), native_c, "{name}");
        assert_features(&src, f32_);
        let read = src.with_mmap(false);
        assert!(!read.is_mapped() && read.is_streamed());
        assert_features(&read, f32_);
    }
}

#[test]
fn labels_weights_and_bias_are_read() {
    let want: Vec<u32> = (0..N).map(label).collect();
    assert_eq!(features::read_labels(&fixture("y_i64.npy")).unwrap(), want);
    assert_eq!(features::read_labels(&fixture("y_i32.npy")).unwrap(), want);
    let e = features::read_labels(&fixture("y_f32.npy"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("y_f32.npy") && e.contains("must be integers"),
        "{e}"
    );
    for name in ["w_f64_f.npy", "w_f32.npy"] {
        let w = features::read_matrix(&fixture(name)).unwrap();
        assert_eq!(w.dim(), (K, D));
        for k in 0..K {
            for j in 0..D {
                assert_eq!(w[[k, j]], 0.5 * k as f64 - 0.125 * j as f64, "{name}");
            }
        }
    }
    let b = features::read_vector(&fixture("b_f64.npy")).unwrap();
    assert_eq!(
        b.to_vec(),
        (0..K).map(|k| 0.1 * k as f64).collect::<Vec<_>>()
    );
}

#[test]
fn bundles_hold_features_labels_and_classifier() {
    for (name, f32_) in [
        ("bundle.npz", true),
        ("bundle.safetensors", true),
        ("bundle_h_dxn.npz", false),
        ("bundle_compressed.npz", false),
    ] {
        let inp = features::open_bundle(&fixture(name)).unwrap();
        assert_features(&inp.features, f32_);
        assert_eq!(inp.labels, (0..N).map(label).collect::<Vec<_>>(), "{name}");
        let w = inp.w.expect("W");
        assert_eq!(w[[3, 5]], 0.5 * 3.0 - 0.125 * 5.0);
        assert_eq!(inp.b.expect("b")[2], 0.1 * 2.0);
        assert!(inp.test.is_none());
    }
    // safetensors features and uncompressed npz members are streamed from disk (mapped in
    // place when C order); compressed npz members are read into memory.
    for (name, streamed) in [
        ("bundle.safetensors", true),
        ("bundle.npz", true),
        ("bundle_compressed.npz", false),
    ] {
        let f = features::open_bundle(&fixture(name)).unwrap().features;
        assert_eq!(f.is_streamed(), streamed, "{name}");
        if streamed {
            assert_features(&f.with_mmap(false), true);
        }
    }
}

#[test]
fn corrupt_and_truncated_files_are_named_errors() {
    let e = FeatureSource::open_npy(&fixture("truncated.npy"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("truncated.npy") && e.contains("truncated"),
        "{e}"
    );
    let e = FeatureSource::open_npy(&fixture("not_npy.npy"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not_npy.npy") && e.contains("not a .npy file"),
        "{e}"
    );
    let e = FeatureSource::open_npy(&fixture("does_not_exist.npy"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does_not_exist.npy"), "{e}");
    let e = features::open_bundle(&fixture("h_f64_c.npy"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected .npz or .safetensors"), "{e}");
    // Labels as features: 1-D.
    let e = FeatureSource::open_npy(&fixture("y_i64.npy"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("float32 or float64"), "{e}");
}

#[test]
fn a_file_that_shrinks_while_streaming_is_an_error_not_a_panic() {
    for mmap in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.npy");
        std::fs::copy(fixture("h_f64_c.npy"), &p).unwrap();
        let src = FeatureSource::open_npy(&p).unwrap().with_mmap(mmap);
        assert_eq!(src.is_mapped(), mmap && cfg!(target_endian = "little"));
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(200).unwrap();
        let e = src
            .for_each_chunk(4, &mut |_, c| {
                // Read the data, as a real pass does (a mapped page past the end would fault).
                if let FeatureChunk::F64(a) = c {
                    std::hint::black_box(a.sum());
                }
                Ok(())
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("h.npy") && e.contains("truncated"),
            "mmap={mmap}: {e}"
        );
    }
}

#[test]
fn second_pass_from_the_cache_equals_rereading_the_file() {
    use ufm::metrics::{compute_metrics, Metric, MetricsConfig, Strategy};
    let w = features::read_matrix(&fixture("w_f64_f.npy")).unwrap();
    let y = features::read_labels(&fixture("y_i64.npy")).unwrap();
    for name in ["h_f32_f.npy", "h_f64_c.npy"] {
        let src = FeatureSource::open_npy(&fixture(name)).unwrap();
        let run = |cache_bytes| {
            let cfg = MetricsConfig {
                cache_bytes,
                chunk_rows: 5,
                strategy: Strategy::TwoPass,
                ..Default::default()
            };
            compute_metrics(&src, &y, Some(w.view()), None, &cfg).unwrap()
        };
        let (a, b) = (run(0), run(1 << 20));
        assert_eq!(a.passes, 2);
        for &m in Metric::ALL {
            assert_eq!(a.get(m), b.get(m), "{name}: {m}");
        }
    }
}
