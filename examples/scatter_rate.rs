//! Throughput of the class-centred scatter update $S \mathrel{+}= X_c^\top X_c$ (lower
//! triangle): ufm's packed kernel (`metrics::stats::scatter`, AVX-512) against faer's
//! triangular product on the same pre-centred rows, and a whole `ClassStats::push`.
//!
//!     cargo run --release --example scatter_rate -- [rows] [d] [K] [reps]
//!
//! Prints GFLOP/s counting $B d(d+1)$ flops (a multiply and an add per lower-triangle entry
//! and row). Set RAYON_NUM_THREADS to choose the threads.
use ndarray::Array2;
use std::time::Instant;
use ufm::metrics::stats::scatter;
use ufm::metrics::{BufferedStats, ClassStats};

fn best<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (n, d, k, reps) = (
        *a.first().unwrap_or(&8192),
        *a.get(1).unwrap_or(&512),
        *a.get(2).unwrap_or(&10),
        *a.get(3).unwrap_or(&5),
    );
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        ((i * 31 + j * 17) % 101) as f32 / 50.0 - 1.0
    });
    let labels: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let means = Array2::<f64>::zeros((k, d));
    let flops = (n * d * (d + 1)) as f64;
    let threads = rayon::current_num_threads();
    let mut s = Array2::<f64>::zeros((d, d));
    let mut ss = vec![0.0; k];
    if scatter::available() {
        let t = best(reps, || {
            scatter::add_centred(&mut s.view_mut(), x.view(), &labels, means.view(), &mut ss);
        });
        println!(
            "packed kernel   rows={n} d={d} threads={threads}: {:.4} s  {:.1} GFLOP/s",
            t,
            flops / t * 1e-9
        );
    } else {
        println!("packed kernel: not available on this CPU (no AVX-512F)");
    }
    let xc = x.mapv(|v| v as f64);
    let t = best(reps, || {
        use faer::linalg::matmul::triangular::{matmul, BlockStructure};
        use faer_ext::IntoFaer;
        let xf = xc.view().into_faer();
        matmul(
            s.view_mut().into_faer(),
            BlockStructure::TriangularLower,
            faer::Accum::Add,
            xf.transpose(),
            BlockStructure::Rectangular,
            xf,
            BlockStructure::Rectangular,
            1.0,
            faer::Par::rayon(threads),
        );
    });
    println!(
        "faer triangular rows={n} d={d} threads={threads}: {:.4} s  {:.1} GFLOP/s",
        t,
        flops / t * 1e-9
    );
    let t = best(reps, || {
        let mut st = ClassStats::new(k, d);
        st.push(x.view(), &labels).unwrap();
    });
    println!(
        "ClassStats::push rows={n} d={d} K={k}: {:.4} s  {:.1} GFLOP/s (scatter flops only)",
        t,
        flops / t * 1e-9
    );
    let batch = std::env::var("BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
        .min(n);
    let t = best(reps, || {
        let mut buf = BufferedStats::new(ClassStats::new(k, d));
        for (xb, lb) in x
            .axis_chunks_iter(ndarray::Axis(0), batch)
            .zip(labels.chunks(batch))
        {
            buf.push(xb, lb).unwrap();
        }
        buf.flush().unwrap();
    });
    println!(
        "BufferedStats, batches of {batch}: {:.4} s  {:.1} GFLOP/s (scatter flops only)",
        t,
        flops / t * 1e-9
    );
}
