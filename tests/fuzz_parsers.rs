//! Claim: no input file makes a `ufm` parser panic, hang, allocate more than 256 MiB at
//! once, or return wrong numbers from a checksummed or size-checked container (issue 12).
//!
//! A seeded, bounded mutation loop: valid files written here (tests/writers; `.npy` in
//! several dtypes, orders and versions, `.npz` stored and deflated, `.safetensors`, MNIST IDX
//! plain / gzip / multi-member gzip, CIFAR-10 batches, a safetensors checkpoint) plus the
//! NumPy-written fixtures are mutated (bit flips, byte overwrites, truncation, extension,
//! header fields set to boundary values, header text tokens replaced by 0, 2^32-1, 2^64,
//! negative numbers, NaN, ... with the header length fixed up) and every library parser runs
//! on each mutant, each case under `catch_unwind` and a counting global allocator. Oracles:
//!
//! * no panic (counted; any panic fails the test), no single allocation over the cap (the
//!   allocator refuses it, which aborts with the case printed), per-case peak under the cap,
//!   no case running over 20 s (a watchdog aborts with the case printed);
//! * `.npz` and `.gz` (CRC-32 protected): a mutant that is accepted gives exactly the
//!   original numbers;
//! * `.npy`, `.safetensors`, plain IDX: a truncated or extended file is an error; an accepted
//!   `.npy` equals what `ndarray-npy` reads from the same bytes; an accepted `.safetensors`
//!   header is accepted by the `safetensors` crate with the same tensors;
//! * data bytes of formats without checksums (raw `.npy`/`.safetensors` data, CIFAR pixels)
//!   may legitimately change values: only the first oracle applies to them.
//!
//! `cargo test --test fuzz_parsers -- --nocapture` prints the counts; `UFM_FUZZ_CASES=N`
//! changes the number of mutants per valid file (default 200).
#![cfg(unix)]

mod writers;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use ufm::features::{self, FeatureSource};
use ufm::metrics::{FeatureChunk, FeatureStream};
use writers::*;

// ------------------------------------------------------------------ allocation cap

const CAP: usize = 256 << 20;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static MAX_SINGLE: AtomicUsize = AtomicUsize::new(0);
static CASE: AtomicU64 = AtomicU64::new(u64::MAX);

struct CappedCounting;

/// Writes `msg` and `n` to stderr without allocating (this runs inside the allocator).
fn say_no_alloc(msg: &[u8], n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // SAFETY: writing initialised stack buffers to file descriptor 2.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::write(2, buf[i..].as_ptr().cast(), buf.len() - i);
        libc::write(2, b"\n".as_ptr().cast(), 1);
    }
}

impl CappedCounting {
    fn admit(size: usize) -> bool {
        if size > CAP {
            say_no_alloc(
                b"fuzz_parsers: refused an allocation over the cap, bytes: ",
                size as u64,
            );
            say_no_alloc(b"fuzz_parsers: in case ", CASE.load(Relaxed));
            return false;
        }
        MAX_SINGLE.fetch_max(size, Relaxed);
        let now = CURRENT.fetch_add(size, Relaxed) + size;
        PEAK.fetch_max(now, Relaxed);
        true
    }
}

// SAFETY: forwards to the system allocator; only counts and refuses oversized requests.
unsafe impl GlobalAlloc for CappedCounting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !Self::admit(l.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !Self::admit(l.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if !Self::admit(new) {
            return std::ptr::null_mut();
        }
        let q = System.realloc(p, l, new);
        if q.is_null() {
            CURRENT.fetch_sub(new, Relaxed);
        } else {
            CURRENT.fetch_sub(l.size(), Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: CappedCounting = CappedCounting;

// ------------------------------------------------------------------ digests

/// What the parsers made of a file (for "accepted with the same numbers" checks).
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Err(String),
    Ok(Vec<u64>),
}

impl Outcome {
    fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

fn bits(v: impl IntoIterator<Item = f64>) -> Vec<u64> {
    v.into_iter().map(f64::to_bits).collect()
}

fn stream_values(src: &FeatureSource) -> ufm::Result<Vec<u64>> {
    let mut out = vec![src.n_rows() as u64, src.feature_dim() as u64];
    src.for_each_chunk(3, &mut |_, c| {
        match c {
            FeatureChunk::F32(a) => out.extend(a.iter().map(|&v| (v as f64).to_bits())),
            FeatureChunk::F64(a) => out.extend(a.iter().map(|&v| v.to_bits())),
        }
        Ok(())
    })?;
    Ok(out)
}

fn outcome(r: ufm::Result<Vec<u64>>) -> Outcome {
    match r {
        Ok(v) => Outcome::Ok(v),
        Err(e) => Outcome::Err(e.to_string()),
    }
}

/// Everything a bundle gives: features (mapped and streamed), labels, W, b, test split.
fn bundle_digest(p: &Path) -> Outcome {
    outcome((|| {
        let inp = features::open_bundle(p)?;
        let mut v = stream_values(&inp.features)?;
        let unmapped = inp.features.clone().with_mmap(false);
        if stream_values(&unmapped)? != v {
            return Err(ufm::Error::Data("mapped and streamed reads differ".into()));
        }
        v.extend(inp.labels.iter().map(|&y| y as u64));
        v.push(u64::MAX);
        if let Some(w) = &inp.w {
            v.extend(w.shape().iter().map(|&s| s as u64));
            v.extend(bits(w.iter().copied()));
        }
        v.push(u64::MAX);
        if let Some(b) = &inp.b {
            v.extend(bits(b.iter().copied()));
        }
        v.push(u64::MAX);
        if let Some((f, l)) = &inp.test {
            v.extend(stream_values(f)?);
            v.extend(l.iter().map(|&y| y as u64));
        }
        Ok(v)
    })())
}

/// Every member of an `.npz` through the low-level reader.
fn npz_digest(p: &Path) -> Outcome {
    outcome((|| {
        let z = ufm::npy::Npz::open(p)?;
        let mut v = Vec::new();
        for name in z.names() {
            let (h, data) = z.read(&name)?;
            v.extend(name.bytes().map(u64::from));
            v.extend(h.shape.iter().map(|&s| s as u64));
            v.extend(data.iter().map(|&b| b as u64));
            if z.member(&name).is_some_and(|m| !m.deflated) {
                z.verify(&name)?;
                z.header(&name)?;
            }
        }
        Ok(v)
    })())
}

fn npy_digest(p: &Path) -> Outcome {
    outcome((|| {
        let a = features::read_npy_array(p)?;
        let mut v: Vec<u64> = a.shape.iter().map(|&s| s as u64).collect();
        v.push(u64::MAX);
        v.extend(bits(a.values.iter().copied()));
        Ok(v)
    })())
}

/// The same bytes through `ndarray-npy`, for the dtype our parser found.
fn npy_reference(bytes: &[u8], dtype: features::Dtype) -> Option<Vec<u64>> {
    use features::Dtype::*;
    use ndarray::ArrayD;
    use ndarray_npy::ReadNpyExt;
    macro_rules! rd {
        ($t:ty) => {
            ArrayD::<$t>::read_npy(bytes).ok().map(|a| {
                let mut v: Vec<u64> = a.shape().iter().map(|&s| s as u64).collect();
                v.push(u64::MAX);
                v.extend(a.iter().map(|&x| (x as f64).to_bits()));
                v
            })
        };
    }
    match dtype {
        F64 => rd!(f64),
        F32 => rd!(f32),
        Int(1) => rd!(i8),
        Int(2) => rd!(i16),
        Int(4) => rd!(i32),
        Int(8) => rd!(i64),
        UInt(1) => rd!(u8).or_else(|| {
            ArrayD::<bool>::read_npy(bytes).ok().map(|a| {
                let mut v: Vec<u64> = a.shape().iter().map(|&s| s as u64).collect();
                v.push(u64::MAX);
                v.extend(a.iter().map(|&x| (x as u8 as f64).to_bits()));
                v
            })
        }),
        UInt(2) => rd!(u16),
        UInt(4) => rd!(u32),
        UInt(8) => rd!(u64),
        _ => None,
    }
}

fn st_digest(p: &Path) -> Outcome {
    outcome((|| {
        let mut t = features::safetensors_header(p)?;
        t.sort_by(|a, b| a.0.cmp(&b.0));
        let mut v = Vec::new();
        for (name, raw) in &t {
            v.extend(name.bytes().map(u64::from));
            v.extend(raw.shape.iter().map(|&s| s as u64));
            v.push(raw.offset);
        }
        Ok(v)
    })())
}

/// The tensors as the `safetensors` crate sees them, in the same digest.
fn st_reference(bytes: &[u8]) -> Option<Vec<u64>> {
    let (n, meta) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let mut t: Vec<_> = meta.tensors().into_iter().collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    let mut v = Vec::new();
    for (name, info) in t {
        v.extend(name.bytes().map(u64::from));
        v.extend(info.shape.iter().map(|&s| s as u64));
        v.push((8 + n + info.data_offsets.0) as u64);
    }
    Some(v)
}

fn mnist_digest(root: &Path) -> Outcome {
    outcome((|| {
        let d = ufm::nn::data::load_mnist(root)?;
        let mut v: Vec<u64> = d.train.pixels.iter().map(|&b| b as u64).collect();
        v.extend(d.train.labels.iter().map(|&y| y as u64));
        v.extend(d.test.pixels.iter().map(|&b| b as u64));
        v.extend(d.test.labels.iter().map(|&y| y as u64));
        Ok(v)
    })())
}

fn cifar_digest(root: &Path) -> Outcome {
    outcome((|| {
        let d = ufm::nn::data::load_cifar10(root)?;
        let mut v: Vec<u64> = d.train.labels.iter().map(|&y| y as u64).collect();
        v.extend(d.train.pixels.iter().map(|&b| b as u64));
        v.extend(d.test.labels.iter().map(|&y| y as u64));
        v.extend(d.test.pixels.iter().map(|&b| b as u64));
        Ok(v)
    })())
}

fn mlp() -> ufm::nn::models::Net<f32> {
    use ufm::nn::models::{Arch, ModelConfig, Net};
    Net::new(
        &ModelConfig {
            arch: Arch::Mlp,
            width: 2,
            depth: 1,
            n_classes: 3,
            bias: true,
            etf_classifier: false,
            fixdim: 0,
            sota: false,
        },
        0,
    )
    .unwrap()
}

fn checkpoint_digest(p: &Path) -> Outcome {
    use ufm::nn::checkpoint::Checkpoint;
    outcome((|| {
        let ck = Checkpoint::open(p)?;
        let mut meta: Vec<_> = ck.metadata().into_iter().collect();
        meta.sort();
        let mut v: Vec<u64> = format!("{meta:?}").bytes().map(u64::from).collect();
        let bytes = std::fs::read(p).map_err(|e| ufm::Error::io("read", p, e))?;
        let mut names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
            .map(|st| st.names().into_iter().map(str::to_string).collect())
            .unwrap_or_default();
        names.sort();
        for name in names {
            if let Some(t) = ck.tensor(&name) {
                v.extend(bits(t.iter().map(|&x| x as f64)));
            }
        }
        let mut net = mlp();
        ck.load_into(&mut net)?;
        Ok(v)
    })())
}

/// Every path-based parser on any file (whatever its kind): none may panic.
fn every_parser(p: &Path) {
    let _ = features::npy_header(p);
    let _ = features::read_labels(p);
    let _ = features::read_matrix(p);
    let _ = features::read_vector(p);
    let _ = FeatureSource::open_npy(p).and_then(|s| stream_values(&s));
    let _ = features::open_features(p).and_then(|s| stream_values(&s));
    let _ = features::safetensors_header(p);
    let _ = ufm::nn::checkpoint::Checkpoint::open(p);
    if let Ok(prob) = ufm::ufm::UfmConfig::balanced(2, 3, 3).build() {
        let _ = ufm::io::load_ufm_npz(p, &prob);
    }
}

// ------------------------------------------------------------------ seeds and mutations

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Npy,
    Npz,
    Safetensors,
    /// One file of an MNIST folder; `gz` files carry a CRC-32.
    Idx {
        gz: bool,
    },
    Cifar,
    Checkpoint,
}

struct Seed {
    label: String,
    kind: Kind,
    /// File name (for the extension) and bytes.
    name: String,
    bytes: Vec<u8>,
    /// What the file was built from, so that an inner part can be mutated and the container
    /// rebuilt around it with a valid checksum.
    parts: Parts,
}

#[derive(Clone)]
enum Parts {
    None,
    /// `.npz` members, deflated, numpy's zip64 local headers.
    Zip(Vec<(&'static str, Vec<u8>)>, bool, bool),
    /// Uncompressed bytes and member cuts of a gzip file.
    Gz(Vec<u8>, Vec<usize>),
}

impl Parts {
    /// Mutates one inner part (an `.npy` member, the IDX bytes) and rebuilds the container.
    fn mutate(&self, rng: &mut StdRng) -> Option<(Vec<u8>, &'static str, bool)> {
        match self {
            Parts::None => None,
            Parts::Zip(m, deflate, z64) => {
                let mut m = m.clone();
                let i = rng.random_range(0..m.len());
                let (what, resized) = mutate(rng, Kind::Npy, &mut m[i].1);
                Some((zip(&m, *deflate, *z64), what, resized))
            }
            Parts::Gz(raw, cuts) => {
                let mut raw = raw.clone();
                let (what, resized) = mutate(rng, Kind::Idx { gz: false }, &mut raw);
                let cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c <= raw.len()).collect();
                Some((gzip_multi(&raw, &cuts), what, resized))
            }
        }
    }
}

fn seeds(tmp: &Path) -> Vec<Seed> {
    let mut s = Vec::new();
    let mut add_parts = |label: &str, kind: Kind, name: &str, bytes: Vec<u8>, parts: Parts| {
        s.push(Seed {
            label: label.into(),
            kind,
            name: name.into(),
            bytes,
            parts,
        })
    };
    macro_rules! add {
        ($label:expr, $kind:expr, $name:expr, $bytes:expr $(,)?) => {
            add_parts($label, $kind, $name, $bytes, Parts::None)
        };
    }
    let (n, d) = (7usize, 3usize);
    let h: Vec<f64> = (0..n * d).map(|i| 0.25 * i as f64 - 1.5).collect();
    let hf: Vec<f64> = (0..d)
        .flat_map(|j| h.iter().skip(j).step_by(d).copied().collect::<Vec<_>>())
        .collect();
    let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    let y: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let y8: Vec<u8> = y.iter().map(|&v| v as u8).collect();
    add!(
        "npy f32 C v1",
        Kind::Npy,
        "h.npy",
        npy("<f4", false, &[n, d], &f32_le(&h32), 1)
    );
    add!(
        "npy f64 F v2",
        Kind::Npy,
        "h.npy",
        npy("<f8", true, &[n, d], &f64_le(&hf), 2)
    );
    add!(
        "npy >f8 C v3",
        Kind::Npy,
        "h.npy",
        npy(">f8", false, &[n, d], &f64_be(&h), 3)
    );
    add!(
        "npy i64 labels",
        Kind::Npy,
        "y.npy",
        npy("<i8", false, &[n], &i64_le(&y), 1)
    );
    add!(
        "npy u1 labels",
        Kind::Npy,
        "y.npy",
        npy("|u1", false, &[n], &y8, 1)
    );
    add!(
        "npy i32 W",
        Kind::Npy,
        "w.npy",
        npy(
            "<i4",
            false,
            &[3, d],
            &i32_le(&[1, -2, 3, -4, 5, -6, 7, -8, 9]),
            1
        ),
    );
    let w: Vec<f64> = (0..3 * d).map(|i| i as f64 * 0.5).collect();
    let members = |hh: Vec<u8>| -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("features.npy", hh),
            ("labels.npy", npy("<i8", false, &[n], &i64_le(&y), 1)),
            ("W.npy", npy("<f8", false, &[3, d], &f64_le(&w), 1)),
            (
                "b.npy",
                npy("<f8", false, &[3], &f64_le(&[0.1, 0.2, 0.3]), 1),
            ),
        ]
    };
    for (label, hh, deflate, z64) in [
        (
            "npz stored (numpy zip64 headers)",
            npy("<f4", false, &[n, d], &f32_le(&h32), 1),
            false,
            true,
        ),
        (
            "npz deflated",
            npy("<f8", true, &[n, d], &f64_le(&hf), 1),
            true,
            true,
        ),
        (
            "npz stored (plain headers)",
            npy("<f8", false, &[n, d], &f64_le(&h), 1),
            false,
            false,
        ),
    ] {
        let m = members(hh);
        add_parts(
            label,
            Kind::Npz,
            "b.npz",
            zip(&m, deflate, z64),
            Parts::Zip(m, deflate, z64),
        );
    }
    add!(
        "npz zip64 end records",
        Kind::Npz,
        "b.npz",
        zip_with(
            &members(npy("<f8", false, &[n, d], &f64_le(&h), 3)),
            false,
            true,
            true
        )
    );
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics");
    for f in ["bundle.npz", "bundle_compressed.npz", "bundle_h_dxn.npz"] {
        add!(
            &format!("numpy {f}"),
            Kind::Npz,
            "b.npz",
            std::fs::read(fx.join(f)).unwrap()
        );
    }
    // as `ufm solve --save` writes it (ndarray-npy / zip crate)
    let prob = ufm::ufm::UfmConfig::balanced(2, 3, 3).build().unwrap();
    let x: Vec<f64> = prob.random_point(1, 1.0).unwrap();
    let sp = tmp.join("solve.npz");
    ufm::io::save_ufm_npz(&sp, &prob, &x).unwrap();
    add!(
        "npz from save_ufm_npz",
        Kind::Npz,
        "b.npz",
        std::fs::read(&sp).unwrap()
    );
    add!(
        "safetensors bundle",
        Kind::Safetensors,
        "b.safetensors",
        safetensors(&[
            ("features", "F32", vec![n, d], f32_le(&h32)),
            ("labels", "I64", vec![n], i64_le(&y)),
            ("W", "F64", vec![3, d], f64_le(&w)),
            ("b", "F64", vec![3], f64_le(&[0.1, 0.2, 0.3])),
        ]),
    );
    add!(
        "numpy bundle.safetensors",
        Kind::Safetensors,
        "b.safetensors",
        std::fs::read(fx.join("bundle.safetensors")).unwrap(),
    );
    let (px, lab) = mnist_like(4, 1);
    let imgs = idx_images(4, 28, 28, &px);
    let gz = Kind::Idx { gz: true };
    let parts = Parts::Gz(imgs.clone(), vec![]);
    add_parts(
        "idx images .gz",
        gz,
        "train-images-idx3-ubyte.gz",
        gzip(&imgs),
        parts,
    );
    let parts = Parts::Gz(imgs.clone(), vec![7, 900]);
    let multi = gzip_multi(&imgs, &[7, 900]);
    add_parts(
        "idx images multi-member .gz",
        gz,
        "train-images-idx3-ubyte.gz",
        multi,
        parts,
    );
    let parts = Parts::Gz(idx_labels(&lab), vec![]);
    let labs = gzip(&idx_labels(&lab));
    add_parts(
        "idx labels .gz",
        gz,
        "train-labels-idx1-ubyte.gz",
        labs,
        parts,
    );
    add!(
        "idx images plain",
        Kind::Idx { gz: false },
        "train-images-idx3-ubyte",
        imgs.clone()
    );
    add!(
        "idx labels plain",
        Kind::Idx { gz: false },
        "train-labels-idx1-ubyte",
        idx_labels(&lab)
    );
    add!(
        "cifar batch",
        Kind::Cifar,
        "data_batch_1.bin",
        cifar_records(3, 1)
    );
    add!(
        "cifar test batch",
        Kind::Cifar,
        "test_batch.bin",
        cifar_records(2, 2)
    );
    let mut net = mlp();
    let mut meta = HashMap::new();
    meta.insert("epoch".to_string(), "3".to_string());
    add!(
        "checkpoint (MLP)",
        Kind::Checkpoint,
        "c.safetensors",
        ufm::nn::checkpoint::to_bytes(&mut net, &[], meta).unwrap(),
    );
    s
}

/// Where the header text of an `.npy` or `.safetensors` file lies, and how to rewrite its
/// length field: `(start, len, field offset, field width)`.
fn header_span(kind: Kind, b: &[u8]) -> Option<(usize, usize, usize, usize)> {
    match kind {
        Kind::Npy if b.len() >= 12 && b.starts_with(b"\x93NUMPY") => {
            if b[6] == 1 {
                Some((10, u16::from_le_bytes([b[8], b[9]]) as usize, 8, 2))
            } else {
                Some((
                    12,
                    u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize,
                    8,
                    4,
                ))
            }
        }
        Kind::Safetensors | Kind::Checkpoint if b.len() >= 8 => Some((
            8,
            u64::from_le_bytes(b[..8].try_into().unwrap()) as usize,
            0,
            8,
        )),
        _ => None,
    }
    .filter(|&(s, l, _, _)| s + l <= b.len())
}

const BOUNDARY: [u64; 8] = [
    0,
    1,
    0x7F,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    1 << 40,
    u64::MAX,
];
const TOKENS: [&str; 16] = [
    "0",
    "1",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "-1",
    "NaN",
    "nan",
    "1e400",
    "3.5",
    "",
    "Truee",
    "None",
    "True",
];

/// One mutation of `b`; returns its name and whether it changed the file's length.
fn mutate(rng: &mut StdRng, kind: Kind, b: &mut Vec<u8>) -> (&'static str, bool) {
    let len = b.len();
    let pick = rng.random_range(0..12u32);
    let near_start = |rng: &mut StdRng| rng.random_range(0..len.clamp(1, 160));
    match pick {
        0 => {
            let at = rng.random_range(0..len);
            b[at] ^= 1 << rng.random_range(0..8);
            ("flip one bit", false)
        }
        1 => {
            for _ in 0..rng.random_range(2..6) {
                let at = rng.random_range(0..len);
                b[at] ^= 1 << rng.random_range(0..8);
            }
            ("flip bits", false)
        }
        2 => {
            let at = rng.random_range(0..len);
            b[at] = rng.random();
            ("random byte", false)
        }
        3 => {
            let at = near_start(rng);
            b[at] = [0u8, 0xFF, 0x7F, 0x80, b' ', b'\n'][rng.random_range(0..6)];
            ("header byte boundary", false)
        }
        4 => {
            b.truncate(rng.random_range(0..len));
            ("truncate", true)
        }
        5 => {
            let k = rng.random_range(1..64);
            let zero = rng.random::<bool>();
            b.extend((0..k).map(|_| if zero { 0 } else { rng.random::<u8>() }));
            ("extend", true)
        }
        6 | 7 => {
            // an integer field: anywhere, or near the start (length fields, IDX dims,
            // zip end record) or at a zip structure
            let v = BOUNDARY[rng.random_range(0..BOUNDARY.len())];
            let w = [2usize, 4, 8][rng.random_range(0..3)];
            let at = if kind == Kind::Npz && rng.random::<bool>() {
                // a field of a zip structure (local header, central directory, end record)
                let sigs: Vec<usize> = (0..len.saturating_sub(4))
                    .filter(|&i| b[i] == b'P' && b[i + 1] == b'K' && b[i + 2] < 8)
                    .collect();
                if sigs.is_empty() {
                    0
                } else {
                    sigs[rng.random_range(0..sigs.len())] + rng.random_range(4..46)
                }
            } else if pick == 6 {
                near_start(rng)
            } else {
                rng.random_range(0..len)
            };
            let bytes = if kind == (Kind::Idx { gz: false }) || rng.random_range(0..4) == 0 {
                v.to_be_bytes()[8 - w..].to_vec()
            } else {
                v.to_le_bytes()[..w].to_vec()
            };
            for (i, x) in bytes.into_iter().enumerate() {
                if let Some(t) = b.get_mut(at + i) {
                    *t = x;
                }
            }
            ("integer field boundary value", false)
        }
        10 | 11 => {
            // a declared size or count set to a boundary value
            let v = BOUNDARY[rng.random_range(0..BOUNDARY.len())];
            let (at, w, be) = match kind {
                Kind::Npy | Kind::Safetensors | Kind::Checkpoint => match header_span(kind, b) {
                    Some((_, _, field, width)) => (field, width, false),
                    None => (0, 8, false),
                },
                Kind::Idx { gz: false } => (4 * rng.random_range(1..4usize), 4, true),
                Kind::Idx { gz: true } => (len.saturating_sub(4), 4, false), // ISIZE
                Kind::Npz => {
                    let sigs: Vec<usize> = (0..len.saturating_sub(4))
                        .filter(|&i| b[i..i + 4] == *b"PK\x01\x02" || b[i..i + 4] == *b"PK\x05\x06")
                        .collect();
                    if sigs.is_empty() {
                        (0, 4, false)
                    } else {
                        let at = sigs[rng.random_range(0..sigs.len())];
                        if b[at + 2] == 1 {
                            (at + [20, 24, 42][rng.random_range(0..3)], 4, false)
                        } else {
                            (
                                at + [10, 12, 16][rng.random_range(0..3)],
                                if rng.random::<bool>() { 2 } else { 4 },
                                false,
                            )
                        }
                    }
                }
                Kind::Cifar => (rng.random_range(0..len), 1, false),
            };
            let bytes = if be {
                v.to_be_bytes()[8 - w..].to_vec()
            } else {
                v.to_le_bytes()[..w].to_vec()
            };
            for (i, x) in bytes.into_iter().enumerate() {
                if let Some(t) = b.get_mut(at + i) {
                    *t = x;
                }
            }
            ("declared size boundary value", false)
        }
        _ => {
            // replace a token of the header text, and (mostly) fix up the header length
            let Some((s, l, field, width)) = header_span(kind, b) else {
                let at = rng.random_range(0..len);
                b[at] = b[at].wrapping_add(1);
                return ("byte +1", false);
            };
            let text = &b[s..s + l];
            let toks: Vec<(usize, usize)> = {
                let mut v = Vec::new();
                let mut i = 0;
                while i < text.len() {
                    if text[i].is_ascii_alphanumeric() {
                        let j = (i..text.len())
                            .find(|&j| !(text[j].is_ascii_alphanumeric() || text[j] == b'_'))
                            .unwrap_or(text.len());
                        v.push((i, j));
                        i = j;
                    } else {
                        i += 1;
                    }
                }
                v
            };
            if toks.is_empty() {
                return ("no token", false);
            }
            let (i, j) = toks[rng.random_range(0..toks.len())];
            let new = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
            let mut t = text[..i].to_vec();
            t.extend_from_slice(new);
            t.extend_from_slice(&text[j..]);
            let fix = rng.random_range(0..4) != 0;
            let mut out = b[..s].to_vec();
            if fix {
                let nl = t.len() as u64;
                if width == 2 && nl > 0xFFFF {
                    return ("token (too long)", false);
                }
                out[field..field + width].copy_from_slice(&nl.to_le_bytes()[..width]);
            }
            out.extend(t);
            out.extend_from_slice(&b[s + l..]);
            let changed = out.len() != len;
            *b = out;
            // with the length fixed up, the data itself did not move: not a size change
            (
                if fix {
                    "header token (length fixed)"
                } else {
                    "header token"
                },
                changed && !fix,
            )
        }
    }
}

// ------------------------------------------------------------------ the loop

#[derive(Default, Debug)]
struct Counts {
    cases: usize,
    errors: usize,
    accepted_same: usize,
    accepted_changed: usize,
    panics: usize,
}

#[test]
fn mutated_files_never_panic_overallocate_or_change_checked_numbers() {
    let seed = 12u64;
    let per_seed: usize = std::env::var("UFM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let seeds = seeds(tmp.path());
    let mut rng = StdRng::seed_from_u64(seed);
    // the counting allocator is live
    let probe = std::hint::black_box(vec![1u8; 8 << 20]);
    assert!(MAX_SINGLE.load(Relaxed) >= 8 << 20);
    drop(probe);
    MAX_SINGLE.store(0, Relaxed);

    // Watchdog: a case that runs over 20 s is a hang.
    static CASE_START_MS: AtomicU64 = AtomicU64::new(u64::MAX);
    let t0 = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let s = CASE_START_MS.load(Relaxed);
        if s != u64::MAX && t0.elapsed().as_millis() as u64 > s + 20_000 {
            eprintln!(
                "fuzz_parsers: case {} ran over 20 s (hang)",
                CASE.load(Relaxed)
            );
            std::process::abort();
        }
    });
    let panic_msgs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let msgs = panic_msgs.clone();
        std::panic::set_hook(Box::new(move |info| {
            let m = format!("case {}: {info}", CASE.load(Relaxed));
            if let Ok(mut v) = msgs.lock() {
                v.push(m);
            }
        }));
    }

    let mut counts: Vec<(String, Counts)> = Vec::new();
    let mut violations: Vec<String> = Vec::new();
    let mut reference_disagreements: Vec<String> = Vec::new();
    let mut max_case_peak = 0usize;
    let mut case_id = 0u64;
    let mnist_root = tmp.path().join("mnist");
    let cifar_root = tmp.path().join("cifar");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();

    for sd in &seeds {
        // the directory-based loaders read a whole folder: restore it for each seed
        let dir_file: Option<PathBuf> = match sd.kind {
            Kind::Idx { gz } => {
                let _ = std::fs::remove_dir_all(&mnist_root);
                write_mnist(&mnist_root, 4, 3, gz);
                Some(mnist_root.join("MNIST/raw").join(&sd.name))
            }
            Kind::Cifar => {
                let _ = std::fs::remove_dir_all(&cifar_root);
                write_cifar(&cifar_root, 3, 2);
                Some(cifar_root.join("cifar-10-batches-bin").join(&sd.name))
            }
            _ => None,
        };
        let path = dir_file.clone().unwrap_or_else(|| files.join(&sd.name));
        let digest = |p: &Path| -> Outcome {
            match sd.kind {
                Kind::Npy => npy_digest(p),
                Kind::Npz => {
                    let a = bundle_digest(p);
                    let b = npz_digest(p);
                    match (a, b) {
                        (Outcome::Ok(mut x), Outcome::Ok(y)) => {
                            x.extend(y);
                            Outcome::Ok(x)
                        }
                        (Outcome::Err(e), _) | (_, Outcome::Err(e)) => Outcome::Err(e),
                    }
                }
                Kind::Safetensors => {
                    let a = st_digest(p);
                    if a.is_ok() {
                        // and the bundle reader on top of it
                        if let Outcome::Err(e) = bundle_digest(p) {
                            return Outcome::Err(e);
                        }
                    }
                    a
                }
                Kind::Idx { .. } => mnist_digest(&mnist_root),
                Kind::Cifar => cifar_digest(&cifar_root),
                Kind::Checkpoint => checkpoint_digest(p),
            }
        };
        std::fs::write(&path, &sd.bytes).unwrap();
        let base = digest(&path);
        assert!(
            base.is_ok(),
            "{}: the valid seed file is rejected: {base:?}",
            sd.label
        );
        let mut c = Counts::default();
        for _ in 0..per_seed {
            case_id += 1;
            CASE.store(case_id, Relaxed);
            let mut b = sd.bytes.clone();
            // an inner part (an .npz member, the IDX bytes inside gzip) with the container
            // rebuilt around it (valid CRC), or the file itself
            let inner = match sd.parts {
                Parts::None => None,
                _ if rng.random_range(0..3) == 0 => sd.parts.mutate(&mut rng),
                _ => None,
            };
            let is_inner = inner.is_some();
            let (what, resized) = match inner {
                Some((bytes, what, resized)) => {
                    b = bytes;
                    (what, resized)
                }
                None => mutate(&mut rng, sd.kind, &mut b),
            };
            std::fs::write(&path, &b).unwrap();
            let baseline = CURRENT.load(Relaxed);
            PEAK.store(baseline, Relaxed);
            CASE_START_MS.store(t0.elapsed().as_millis() as u64, Relaxed);
            let res = catch_unwind(AssertUnwindSafe(|| {
                every_parser(&path);
                digest(&path)
            }));
            CASE_START_MS.store(u64::MAX, Relaxed);
            max_case_peak = max_case_peak.max(PEAK.load(Relaxed).saturating_sub(baseline));
            c.cases += 1;
            let o = match res {
                Err(_) => {
                    c.panics += 1;
                    continue;
                }
                Ok(o) => o,
            };
            let tag = format!(
                "case {case_id} ({}, {}{what})",
                sd.label,
                if is_inner { "inner: " } else { "" }
            );
            match &o {
                Outcome::Err(e) => {
                    c.errors += 1;
                    // errors name the file (or, for folder loaders, a file in it)
                    let named = e.contains(path.file_name().unwrap().to_str().unwrap())
                        || e.contains("MNIST")
                        || e.contains("cifar");
                    if !named {
                        violations.push(format!("{tag}: the error does not name the file: {e}"));
                    }
                }
                Outcome::Ok(_) if o == base => c.accepted_same += 1,
                Outcome::Ok(_) => c.accepted_changed += 1,
            }
            if !o.is_ok() {
                continue;
            }
            let checksummed = matches!(sd.kind, Kind::Npz | Kind::Idx { gz: true }) && !is_inner;
            if checksummed && o != base {
                violations.push(format!(
                    "{tag}: a CRC-protected file was accepted with other numbers"
                ));
            }
            let cifar_ok_len = sd.kind == Kind::Cifar && b.len() % 3073 == 0;
            if resized && !checksummed && !cifar_ok_len {
                violations.push(format!(
                    "{tag}: a file of another length ({} bytes, was {}) was accepted",
                    b.len(),
                    sd.bytes.len()
                ));
            }
            match sd.kind {
                Kind::Npy => {
                    let raw = features::npy_header(&path).expect("accepted above");
                    match npy_reference(&b, raw.dtype) {
                        Some(r) if Outcome::Ok(r.clone()) == o => {}
                        Some(_) => {
                            violations.push(format!("{tag}: values differ from ndarray-npy's"))
                        }
                        None => reference_disagreements.push(format!(
                            "{tag}: accepted here, rejected by ndarray-npy: {:?}",
                            String::from_utf8_lossy(&b[..b.len().min(128)])
                        )),
                    }
                }
                Kind::Safetensors | Kind::Checkpoint if st_digest(&path).is_ok() => {
                    match st_reference(&b) {
                        Some(r) if Outcome::Ok(r.clone()) == st_digest(&path) => {}
                        Some(_) => violations.push(format!(
                            "{tag}: tensors differ from the safetensors crate's"
                        )),
                        None => violations.push(format!(
                            "{tag}: accepted here, rejected by the safetensors crate"
                        )),
                    }
                }
                _ => {}
            }
        }
        counts.push((sd.label.clone(), c));
    }
    CASE.store(u64::MAX, Relaxed);
    let _ = std::panic::take_hook();

    let total = counts.iter().fold(Counts::default(), |mut t, (_, c)| {
        t.cases += c.cases;
        t.errors += c.errors;
        t.accepted_same += c.accepted_same;
        t.accepted_changed += c.accepted_changed;
        t.panics += c.panics;
        t
    });
    println!(
        "fuzz_parsers: seed {seed}, {per_seed} mutants per valid file, {} files",
        seeds.len()
    );
    println!(
        "{:<36} {:>6} {:>7} {:>9} {:>12} {:>7}",
        "file", "cases", "errors", "accepted", "(changed)", "panics"
    );
    for (l, c) in &counts {
        println!(
            "{l:<36} {:>6} {:>7} {:>9} {:>12} {:>7}",
            c.cases,
            c.errors,
            c.accepted_same + c.accepted_changed,
            c.accepted_changed,
            c.panics
        );
    }
    println!(
        "{:<36} {:>6} {:>7} {:>9} {:>12} {:>7}",
        "total",
        total.cases,
        total.errors,
        total.accepted_same + total.accepted_changed,
        total.accepted_changed,
        total.panics
    );
    println!(
        "largest single allocation {:.1} MiB, largest per-case peak {:.1} MiB (cap {} MiB); {:.1} s",
        MAX_SINGLE.load(Relaxed) as f64 / (1 << 20) as f64,
        max_case_peak as f64 / (1 << 20) as f64,
        CAP >> 20,
        start.elapsed().as_secs_f64()
    );
    println!(
        "accepted here but rejected by ndarray-npy: {}",
        reference_disagreements.len()
    );
    for d in reference_disagreements.iter().take(5) {
        println!("  {d}");
    }
    let msgs = panic_msgs.lock().unwrap();
    for m in msgs.iter().take(10) {
        println!("PANIC {m}");
    }
    for v in violations.iter().take(20) {
        println!("VIOLATION {v}");
    }
    assert_eq!(total.panics, 0, "parsers panicked");
    assert!(violations.is_empty(), "{} violations", violations.len());
    assert!(max_case_peak <= CAP);
}
