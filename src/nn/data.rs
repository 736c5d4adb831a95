//! Image data sets as the original code feeds them to the network: MNIST (IDX files),
//! CIFAR-10 (binary batches) and CIFAR-10 with random labels.
//!
//! Every image $x\in\{0,\dots,255\}^{C\times32\times32}$ reaches the network as
//! $$\tilde x_{c,i,j}=\frac{x_{c,i,j}/255-m_c}{s_c},$$
//! with the per-data-set constants $(m,s)$ of the original `datasets.py` (Zhu et al., NeurIPS
//! 2021, *A Geometric Analysis of Neural Collapse with Unconstrained Features*):
//!
//! | data set | stored | mean $m$ | std $s$ |
//! |---|---|---|---|
//! | `mnist` | 28×28 grey → PIL bilinear resize to 32×32 → 3 equal channels | 0.1307 | 0.3081 |
//! | `cifar10` | 3×32×32 | (0.4914, 0.4822, 0.4465) | (0.2023, 0.1994, 0.2010) |
//! | `cifar10_random` | 3×32×32, labels replaced | (0.485, 0.456, 0.406) | (0.229, 0.224, 0.225) |
//!
//! The MNIST resize reproduces `torchvision.transforms.Resize(32)` on a PIL image exactly:
//! PIL's separable bilinear ("triangle") filter with 22-bit fixed-point coefficients, a
//! horizontal pass, rounding to `u8`, then a vertical pass (for upsampling, antialiasing
//! changes nothing). Images are kept as `u8` (60 MB for MNIST) and normalised per batch.
//!
//! With `--sota`, training batches get `RandomCrop(32, padding=4)` (zero padding in pixel
//! space) followed by `RandomHorizontalFlip(0.5)`, drawn from a seeded generator.

use crate::error::{Error, Result};
use crate::real::Real;
use ndarray::Array4;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The data sets of the original code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    /// MNIST, 60,000 / 10,000 handwritten digits.
    Mnist,
    /// CIFAR-10 (binary version), 50,000 / 10,000 colour images.
    Cifar10,
    /// CIFAR-10 with every label replaced by a balanced random permutation (seeded).
    #[serde(rename = "cifar10_random")]
    Cifar10Random,
}

impl std::str::FromStr for DatasetName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "mnist" => Ok(DatasetName::Mnist),
            "cifar10" => Ok(DatasetName::Cifar10),
            "cifar10_random" => Ok(DatasetName::Cifar10Random),
            _ => Err(Error::param(
                "dataset",
                format!("unknown data set `{s}`; use mnist, cifar10 or cifar10_random"),
            )),
        }
    }
}

impl DatasetName {
    /// The name as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar10Random => "cifar10_random",
        }
    }

    /// Per-channel normalisation constants (mean, std) of the original code.
    pub fn normalization(self) -> ([f32; 3], [f32; 3]) {
        match self {
            DatasetName::Mnist => ([0.1307; 3], [0.3081; 3]),
            DatasetName::Cifar10 => ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
            DatasetName::Cifar10Random => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        }
    }
}

/// A set of `u8` images with labels. `channels` is the number stored (1 for MNIST, whose single
/// channel is replicated to 3 when a batch is built).
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// Pixels, `n × channels × height × width`, row-major.
    pub pixels: Vec<u8>,
    /// Labels in `0..n_classes`.
    pub labels: Vec<u32>,
    /// Stored channels (1 or 3).
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.channels * self.height * self.width;
        &self.pixels[i * s..(i + 1) * s]
    }
    /// Number of images per class (length `k`).
    pub fn class_counts(&self, k: usize) -> Vec<usize> {
        let mut c = vec![0; k];
        for &y in &self.labels {
            c[y as usize] += 1;
        }
        c
    }
    /// Keeps the images with the given indices, in that order.
    pub fn select(&self, idx: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(idx.len() * self.channels * self.height * self.width);
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }
}

/// A loaded data set: train and test images, the normalisation, and where the files were.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Which data set.
    pub name: DatasetName,
    /// Training images.
    pub train: ImageSet,
    /// Test images.
    pub test: ImageSet,
    /// Number of classes $K$ (10).
    pub n_classes: usize,
    /// Files that were read (for the log).
    pub files: Vec<PathBuf>,
    /// Notes for the user (missing optional batches, where random labels were saved).
    pub notes: Vec<String>,
}

/// The official MNIST files: (name, md5 of the `.gz`).
pub const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    (
        "train-labels-idx1-ubyte",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
];

/// Where the data files must be placed, with the official URLs (used for missing files and
/// when `--download` ([`crate::nn::download`]) cannot reach the network).
pub fn download_instructions(name: DatasetName, data_dir: &Path) -> String {
    match name {
        DatasetName::Mnist => {
            let dir = data_dir.join("MNIST").join("raw");
            let mut s = format!(
                "place the four MNIST files (gzipped or not) in {}:\n",
                dir.display()
            );
            for (f, md5) in MNIST_FILES {
                s += &format!(
                    "  {f}.gz  (md5 {md5})  from https://ossci-datasets.s3.amazonaws.com/mnist/{f}.gz\n"
                );
            }
            s + "e.g. `mkdir -p DIR && cd DIR && wget <url>` on a machine with network access, \
                 or run `ufm train --download` where the network is reachable"
        }
        _ => format!(
            "place CIFAR-10 binary batches (data_batch_1.bin .. data_batch_5.bin, test_batch.bin; \
             any multiple of 3073 bytes) in {}: download \
             https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (md5 \
             c32a1d4ab5d03f1284b67883e8d87530) and run `tar xzf cifar-10-binary.tar.gz -C {}`",
            data_dir.join("cifar-10-batches-bin").display(),
            data_dir.display()
        ),
    }
}

/// Largest expansion of a deflate stream (about 1032:1); a gzip file of $c$ bytes cannot
/// decompress to more than $1032\,c$ bytes, whatever its header claims.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Reads the IDX file `stem` (or `stem.gz`) from `dir`: header and data, exactly as long as
/// the header announces (`expect_magic`: 2051 for images, 2049 for labels). A gzip file may
/// hold several members (all are decoded, as `gzip -d` does); its CRC-32 and length are
/// checked, and it is decompressed no further than the announced size plus one byte, so a
/// corrupt header or a stream longer than announced is an error without a large allocation.
fn read_idx(
    dir: &Path,
    stem: &str,
    expect_magic: u32,
    name: DatasetName,
    root: &Path,
) -> Result<(PathBuf, Vec<u8>)> {
    let plain = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    let (path, is_gz) = if plain.is_file() {
        (plain, false)
    } else if gz.is_file() {
        (gz, true)
    } else {
        return Err(Error::Data(format!(
            "missing {} (or {}); {}",
            plain.display(),
            gz.display(),
            download_instructions(name, root)
        )));
    };
    let f = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io("read", &path, e))?.len();
    let mut r: Box<dyn Read> = if is_gz {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            f,
        )))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let gz_err = |e: std::io::Error| {
        Error::format(
            &path,
            format!("not a valid gzip file ({e}); re-download it"),
        )
    };
    let ndims = if expect_magic == 2051 { 3 } else { 1 };
    let hlen = 4 + 4 * ndims;
    let mut b = vec![0u8; hlen];
    // the magic first (so that a wrong kind of file is named as such), then the dimensions
    for (from, to) in [(0, 4), (4, hlen)] {
        let mut got = from;
        while got < to {
            match r.read(&mut b[got..to]) {
                Ok(0) => {
                    return Err(Error::format(
                        &path,
                        format!("IDX header needs {hlen} bytes, the file has {got} (truncated)"),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_gz => return Err(gz_err(e)),
                Err(e) => return Err(Error::io("read", &path, e)),
            }
        }
        let magic = be_u32(&b, 0);
        if magic != expect_magic {
            return Err(Error::format(
                &path,
                format!("IDX magic number is {magic}, expected {expect_magic} (is this the right file, or a corrupt download?)"),
            ));
        }
    }
    let data_len = (0..ndims)
        .try_fold(1u64, |a, i| a.checked_mul(be_u32(&b, 4 + 4 * i) as u64))
        .ok_or_else(|| Error::format(&path, "IDX header sizes overflow"))?;
    let total = data_len + hlen as u64;
    let possible = if is_gz {
        file_len.saturating_mul(MAX_DEFLATE_RATIO)
    } else {
        file_len
    };
    if total > possible {
        return Err(Error::format(
            &path,
            format!(
                "the IDX header announces {total} bytes, more than this {file_len}-byte file can hold (corrupt header or truncated file)"
            ),
        ));
    }
    // bounded by the file size (times 1032 for gzip): what the file can really hold
    b.reserve_exact(data_len as usize);
    let n = r.take(data_len + 1).read_to_end(&mut b).map_err(|e| {
        if is_gz {
            gz_err(e)
        } else {
            Error::io("read", &path, e)
        }
    })? as u64;
    if n != data_len {
        return Err(Error::format(
            &path,
            format!(
                "the IDX header announces {data_len} bytes of data but the file {} (truncated or corrupt)",
                if n < data_len {
                    format!("has only {n}")
                } else {
                    "has more".to_string()
                }
            ),
        ));
    }
    Ok((path, b))
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Side of an MNIST image in its IDX file.
const MNIST_SIDE: usize = 28;

/// Parses an IDX image file (magic 2051): returns `(n, rows, cols, pixels)`. Rows and columns
/// must be positive and the length exact; the caller checks the geometry it expects.
pub fn parse_idx_images(path: &Path, b: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    if b.len() < 16 {
        return Err(Error::format(
            path,
            format!("IDX image header needs 16 bytes, file has {}", b.len()),
        ));
    }
    let magic = be_u32(b, 0);
    if magic != 2051 {
        return Err(Error::format(
            path,
            format!("IDX image magic number is {magic}, expected 2051 (is this a label file or a corrupt download?)"),
        ));
    }
    let (n, r, c) = (
        be_u32(b, 4) as usize,
        be_u32(b, 8) as usize,
        be_u32(b, 12) as usize,
    );
    let need = n
        .checked_mul(r)
        .and_then(|v| v.checked_mul(c))
        .and_then(|v| v.checked_add(16))
        .ok_or_else(|| Error::format(path, "IDX header sizes overflow"))?;
    if r == 0 || c == 0 {
        return Err(Error::format(
            path,
            format!("IDX header announces {r}x{c} images (corrupt header)"),
        ));
    }
    if b.len() != need {
        return Err(Error::format(
            path,
            format!("header says {n} images of {r}x{c} ({need} bytes) but the file has {} bytes (truncated or corrupt)", b.len()),
        ));
    }
    Ok((n, r, c, b[16..].to_vec()))
}

/// Parses an IDX label file (magic 2049).
pub fn parse_idx_labels(path: &Path, b: &[u8]) -> Result<Vec<u32>> {
    if b.len() < 8 {
        return Err(Error::format(
            path,
            format!("IDX label header needs 8 bytes, file has {}", b.len()),
        ));
    }
    let magic = be_u32(b, 0);
    if magic != 2049 {
        return Err(Error::format(
            path,
            format!("IDX label magic number is {magic}, expected 2049"),
        ));
    }
    let n = be_u32(b, 4) as usize;
    if b.len() != n + 8 {
        return Err(Error::format(
            path,
            format!(
                "header says {n} labels but the file has {} label bytes",
                b.len() - 8
            ),
        ));
    }
    Ok(b[8..].iter().map(|&v| v as u32).collect())
}

/// PIL's resampling coefficients for the bilinear filter, as `(xmin, weights)` per output
/// pixel, already in 22-bit fixed point (`Resample.c`: `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
fn pil_bilinear_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    const PRECISION_BITS: u32 = 32 - 8 - 2;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let ww: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if ww != 0.0 { v / ww } else { v };
                    let s = v * (1u64 << PRECISION_BITS) as f64;
                    if s < 0.0 {
                        (-0.5 + s) as i64
                    } else {
                        (0.5 + s) as i64
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// Resizes one `u8` image (row-major `h × w`) to `oh × ow` as PIL's `Image.resize(...,
/// BILINEAR)` does for 8-bit images (horizontal pass, round to `u8`, vertical pass).
pub fn pil_bilinear_resize(img: &[u8], h: usize, w: usize, oh: usize, ow: usize) -> Vec<u8> {
    const PRECISION_BITS: u32 = 32 - 8 - 2;
    let clip8 = |ss: i64| -> u8 { (ss >> PRECISION_BITS).clamp(0, 255) as u8 };
    let half = 1i64 << (PRECISION_BITS - 1);
    // horizontal
    let tmp: Vec<u8> = if ow != w {
        let cx = pil_bilinear_coeffs(w, ow);
        let mut t = vec![0u8; h * ow];
        for y in 0..h {
            for (x, (xmin, k)) in cx.iter().enumerate() {
                let mut ss = half;
                for (j, &kj) in k.iter().enumerate() {
                    ss += img[y * w + xmin + j] as i64 * kj;
                }
                t[y * ow + x] = clip8(ss);
            }
        }
        t
    } else {
        img.to_vec()
    };
    if oh == h {
        return tmp;
    }
    let cy = pil_bilinear_coeffs(h, oh);
    let mut out = vec![0u8; oh * ow];
    for (y, (ymin, k)) in cy.iter().enumerate() {
        for x in 0..ow {
            let mut ss = half;
            for (j, &kj) in k.iter().enumerate() {
                ss += tmp[(ymin + j) * ow + x] as i64 * kj;
            }
            out[y * ow + x] = clip8(ss);
        }
    }
    out
}

fn load_mnist_split(
    dir: &Path,
    root: &Path,
    prefix: &str,
    files: &mut Vec<PathBuf>,
) -> Result<ImageSet> {
    let (pi, bi) = read_idx(
        dir,
        &format!("{prefix}-images-idx3-ubyte"),
        2051,
        DatasetName::Mnist,
        root,
    )?;
    let (pl, bl) = read_idx(
        dir,
        &format!("{prefix}-labels-idx1-ubyte"),
        2049,
        DatasetName::Mnist,
        root,
    )?;
    let (n, r, c, px) = parse_idx_images(&pi, &bi)?;
    if (r, c) != (MNIST_SIDE, MNIST_SIDE) {
        return Err(Error::format(
            &pi,
            format!("IDX images are {r}x{c}, but MNIST images are {MNIST_SIDE}x{MNIST_SIDE} (corrupt header, or another data set)"),
        ));
    }
    if n == 0 {
        return Err(Error::format(&pi, "holds no images"));
    }
    let labels = parse_idx_labels(&pl, &bl)?;
    if labels.len() != n {
        return Err(Error::Data(format!(
            "{} has {n} images but {} has {} labels",
            pi.display(),
            pl.display(),
            labels.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&y| y >= 10) {
        return Err(Error::format(&pl, format!("label {bad} outside 0..10")));
    }
    files.push(pi);
    files.push(pl);
    let (oh, ow) = (32, 32);
    let mut pixels = vec![0u8; n * oh * ow];
    {
        use rayon::prelude::*;
        pixels
            .par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(i, out)| {
                out.copy_from_slice(&pil_bilinear_resize(
                    &px[i * r * c..(i + 1) * r * c],
                    r,
                    c,
                    oh,
                    ow,
                ))
            });
    }
    Ok(ImageSet {
        pixels,
        labels,
        channels: 1,
        height: oh,
        width: ow,
    })
}

/// Loads MNIST from `<data_dir>/MNIST/raw/` (torchvision's layout), resized to 32×32.
pub fn load_mnist(data_dir: &Path) -> Result<Dataset> {
    let dir = data_dir.join("MNIST").join("raw");
    let mut files = Vec::new();
    let train = load_mnist_split(&dir, data_dir, "train", &mut files)?;
    let test = load_mnist_split(&dir, data_dir, "t10k", &mut files)?;
    Ok(Dataset {
        name: DatasetName::Mnist,
        train,
        test,
        n_classes: 10,
        files,
        notes: vec![],
    })
}

/// Parses one CIFAR-10 binary batch (records of 1 label byte + 3072 pixel bytes).
pub fn parse_cifar_batch(path: &Path, b: &[u8], out: &mut ImageSet) -> Result<()> {
    const REC: usize = 3073;
    if b.is_empty() || !b.len().is_multiple_of(REC) {
        return Err(Error::format(
            path,
            format!(
                "{} bytes is not a positive multiple of the 3073-byte CIFAR-10 record (truncated download? expected 30,730,000 for a full batch)",
                b.len()
            ),
        ));
    }
    for (i, r) in b.chunks_exact(REC).enumerate() {
        if r[0] >= 10 {
            return Err(Error::format(
                path,
                format!("record {i} has label {} outside 0..10", r[0]),
            ));
        }
        out.labels.push(r[0] as u32);
        out.pixels.extend_from_slice(&r[1..]);
    }
    Ok(())
}

fn cifar_dir(data_dir: &Path) -> Result<PathBuf> {
    for d in [
        data_dir.join("cifar-10-batches-bin"),
        data_dir.join("cifar10-subset").join("cifar-10-batches-bin"),
    ] {
        if d.is_dir() {
            return Ok(d);
        }
    }
    Err(Error::Data(format!(
        "no CIFAR-10 binary batches under {}; {}",
        data_dir.display(),
        download_instructions(DatasetName::Cifar10, data_dir)
    )))
}

/// Loads CIFAR-10 binary batches from `<data_dir>/cifar-10-batches-bin/` (or
/// `<data_dir>/cifar10-subset/cifar-10-batches-bin/`). Missing `data_batch_2..5.bin` are
/// allowed (noted); `data_batch_1.bin` and `test_batch.bin` are required.
pub fn load_cifar10(data_dir: &Path) -> Result<Dataset> {
    let dir = cifar_dir(data_dir)?;
    let empty = || ImageSet {
        pixels: vec![],
        labels: vec![],
        channels: 3,
        height: 32,
        width: 32,
    };
    let (mut train, mut test) = (empty(), empty());
    let mut files = Vec::new();
    let mut notes = Vec::new();
    for i in 1..=5 {
        let p = dir.join(format!("data_batch_{i}.bin"));
        if !p.is_file() {
            if i == 1 {
                return Err(Error::Data(format!(
                    "missing {}; {}",
                    p.display(),
                    download_instructions(DatasetName::Cifar10, data_dir)
                )));
            }
            notes.push(format!(
                "{} not found: training on fewer images",
                p.display()
            ));
            continue;
        }
        let b = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
        parse_cifar_batch(&p, &b, &mut train)?;
        files.push(p);
    }
    let p = dir.join("test_batch.bin");
    if !p.is_file() {
        return Err(Error::Data(format!(
            "missing {}; {}",
            p.display(),
            download_instructions(DatasetName::Cifar10, data_dir)
        )));
    }
    let b = std::fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
    parse_cifar_batch(&p, &b, &mut test)?;
    files.push(p);
    Ok(Dataset {
        name: DatasetName::Cifar10,
        train,
        test,
        n_classes: 10,
        files,
        notes,
    })
}

/// A balanced random labelling of `n` samples into `k` classes: the list
/// `[0]*(n/k) + [1]*(n/k) + ...` (the first `n mod k` classes get one more) randomly permuted
/// with a seeded generator (the original's `generate_random_label.py`, which set no seed).
pub fn balanced_random_labels(n: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    v.sort_unstable();
    v.shuffle(&mut StdRng::seed_from_u64(seed));
    v
}

/// Random labels as saved on disk (JSON), so that training and validation agree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RandomLabels {
    /// The seed they were drawn with.
    pub seed: u64,
    /// Train labels.
    pub train: Vec<u32>,
    /// Test labels.
    pub test: Vec<u32>,
}

/// Loads `cifar10_random`: CIFAR-10 images with labels from `label_file`, created (seeded,
/// balanced) if it does not exist. The shared data folder is read-only, so the file lives
/// wherever the caller says (the run directory by default).
pub fn load_cifar10_random(data_dir: &Path, label_file: &Path, seed: u64) -> Result<Dataset> {
    let mut d = load_cifar10(data_dir)?;
    d.name = DatasetName::Cifar10Random;
    let labels = if label_file.is_file() {
        let s =
            std::fs::read_to_string(label_file).map_err(|e| Error::io("read", label_file, e))?;
        let l: RandomLabels = serde_json::from_str(&s)
            .map_err(|e| Error::format(label_file, format!("not a random-label JSON file: {e}")))?;
        if l.train.len() != d.train.len() || l.test.len() != d.test.len() {
            return Err(Error::format(
                label_file,
                format!(
                    "holds {}/{} labels but the data has {}/{} images; delete it to regenerate",
                    l.train.len(),
                    l.test.len(),
                    d.train.len(),
                    d.test.len()
                ),
            ));
        }
        d.notes
            .push(format!("random labels read from {}", label_file.display()));
        l
    } else {
        let l = RandomLabels {
            seed,
            train: balanced_random_labels(d.train.len(), 10, seed),
            test: balanced_random_labels(d.test.len(), 10, seed.wrapping_add(1)),
        };
        crate::io::write_atomic(label_file, serde_json::to_string(&l)?.as_bytes())?;
        d.notes.push(format!(
            "random labels (seed {seed}) saved to {}",
            label_file.display()
        ));
        l
    };
    if labels.train.iter().chain(&labels.test).any(|&y| y >= 10) {
        return Err(Error::format(label_file, "labels outside 0..10"));
    }
    d.train.labels = labels.train;
    d.test.labels = labels.test;
    Ok(d)
}

/// Indices of the first `m` samples of each class, in data-set order (`--sample-size`).
pub fn first_per_class(labels: &[u32], k: usize, m: usize) -> Result<Vec<usize>> {
    let mut seen = vec![0usize; k];
    // m comes from --sample-size: never more than the labels (m * k may overflow)
    let mut idx = Vec::with_capacity(m.saturating_mul(k).min(labels.len()));
    for (i, &y) in labels.iter().enumerate() {
        let Some(s) = seen.get_mut(y as usize) else {
            return Err(Error::Data(format!(
                "training label {y} of sample {i} is not below the {k} classes"
            )));
        };
        if *s < m {
            *s += 1;
            idx.push(i);
        }
    }
    if let Some(c) = seen.iter().position(|&s| s < m) {
        return Err(Error::param(
            "sample-size",
            format!(
                "class {c} has only {} training samples, fewer than {m}",
                seen[c]
            ),
        ));
    }
    Ok(idx)
}

/// Normalises images `idx` of `set` into an `n × 3 × H × W` batch (grey images are copied to
/// 3 channels). With `augment`, each image is randomly cropped (pad 4) and flipped.
pub fn make_batch<T: Real>(
    set: &ImageSet,
    idx: &[usize],
    name: DatasetName,
    augment: Option<&mut StdRng>,
) -> (Array4<T>, Vec<u32>) {
    let (h, w) = (set.height, set.width);
    let (mean, std) = name.normalization();
    let mut out = Array4::<T>::zeros((idx.len(), 3, h, w));
    // draw crop offsets and flips up front (sequential, seeded) so threads don't share the rng
    let aug: Vec<(usize, usize, bool)> = match augment {
        Some(rng) => idx
            .iter()
            .map(|_| {
                (
                    rng.random_range(0..9usize),
                    rng.random_range(0..9usize),
                    rng.random::<f64>() < 0.5,
                )
            })
            .collect(),
        None => vec![(4, 4, false); idx.len()],
    };
    let lut: Vec<[T; 256]> = (0..3)
        .map(|c| std::array::from_fn(|v| T::of(((v as f32 / 255.0 - mean[c]) / std[c]) as f64)))
        .collect();
    let zero: Vec<T> = (0..3).map(|c| lut[c][0]).collect();
    {
        use ndarray::parallel::prelude::*;
        use ndarray::Axis;
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(idx.par_iter().zip(aug.par_iter()))
            .for_each(|(mut o, (&i, &(dy, dx, flip)))| {
                let img = set.image(i);
                for c in 0..3 {
                    let sc = if set.channels == 1 { 0 } else { c };
                    let plane = &img[sc * h * w..(sc + 1) * h * w];
                    for y in 0..h {
                        for x in 0..w {
                            // output pixel (y,x) reads padded-image pixel (y+dy, x'+dx) with pad 4
                            let xs = if flip { w - 1 - x } else { x };
                            let (sy, sx) =
                                (y as isize + dy as isize - 4, xs as isize + dx as isize - 4);
                            o[[c, y, x]] =
                                if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                    zero[c]
                                } else {
                                    lut[c][plane[sy as usize * w + sx as usize] as usize]
                                };
                        }
                    }
                }
            });
    }
    (out, idx.iter().map(|&i| set.labels[i]).collect())
}

/// Loads a data set by name. `label_file` is where `cifar10_random` keeps its labels.
pub fn load(name: DatasetName, data_dir: &Path, label_file: &Path, seed: u64) -> Result<Dataset> {
    match name {
        DatasetName::Mnist => load_mnist(data_dir),
        DatasetName::Cifar10 => load_cifar10(data_dir),
        DatasetName::Cifar10Random => load_cifar10_random(data_dir, label_file, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_of_constant_image_is_constant_and_coeffs_sum_to_one() {
        let img = vec![77u8; 28 * 28];
        assert!(pil_bilinear_resize(&img, 28, 28, 32, 32)
            .iter()
            .all(|&v| v == 77));
        for (_, k) in pil_bilinear_coeffs(28, 32) {
            let s: i64 = k.iter().sum();
            assert!((s - (1 << 22)).abs() <= 2, "{s}");
        }
    }

    #[test]
    fn resize_matches_float_bilinear_within_rounding() {
        // Slow reference: half-pixel-centre bilinear interpolation with edge clamping
        // (what PIL's triangle filter reduces to for upsampling), in f64, no rounding.
        let (h, w) = (28, 28);
        let img: Vec<u8> = (0..h * w)
            .map(|i| ((i * 37 + i / 28 * 11) % 256) as u8)
            .collect();
        let out = pil_bilinear_resize(&img, h, w, 32, 32);
        let s = 28.0 / 32.0;
        let interp = |y: f64, x: f64| {
            let c = |v: f64, n: usize| v.max(0.0).min((n - 1) as f64);
            let (y, x) = (c(y, h), c(x, w));
            let (y0, x0) = (y.floor() as usize, x.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (fy, fx) = (y - y0 as f64, x - x0 as f64);
            let p = |a: usize, b: usize| img[a * w + b] as f64;
            (1.0 - fy) * ((1.0 - fx) * p(y0, x0) + fx * p(y0, x1))
                + fy * ((1.0 - fx) * p(y1, x0) + fx * p(y1, x1))
        };
        for oy in 0..32 {
            for ox in 0..32 {
                let r = interp((oy as f64 + 0.5) * s - 0.5, (ox as f64 + 0.5) * s - 0.5);
                let got = out[oy * 32 + ox] as f64;
                // two u8 roundings (after each pass)
                assert!((got - r).abs() <= 1.01, "({oy},{ox}): {got} vs {r}");
            }
        }
    }

    #[test]
    fn idx_header_errors_are_clear() {
        let p = Path::new("x.idx");
        let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        b.extend([1u8; 8]);
        assert!(parse_idx_images(p, &b).is_ok());
        let e = parse_idx_images(p, &b[..20]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        b[3] = 1;
        let e = parse_idx_images(p, &b).unwrap_err().to_string();
        assert!(e.contains("magic") && e.contains("2051"), "{e}");
        let e = parse_idx_labels(p, &[0, 0, 8, 1, 0, 0, 0, 5, 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 labels"), "{e}");
    }

    #[test]
    fn cifar_length_must_be_record_multiple() {
        let mut s = ImageSet {
            pixels: vec![],
            labels: vec![],
            channels: 3,
            height: 32,
            width: 32,
        };
        let b = vec![3u8; 3073 * 2];
        parse_cifar_batch(Path::new("a.bin"), &b, &mut s).unwrap();
        assert_eq!(s.labels, vec![3, 3]);
        let e = parse_cifar_batch(Path::new("a.bin"), &b[..5000], &mut s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3073") && e.contains("a.bin"), "{e}");
    }

    #[test]
    fn random_labels_are_balanced_permutations_and_seeded() {
        let a = balanced_random_labels(1000, 10, 3);
        assert_eq!(a, balanced_random_labels(1000, 10, 3));
        assert_ne!(a, balanced_random_labels(1000, 10, 4));
        let mut c = [0; 10];
        a.iter().for_each(|&y| c[y as usize] += 1);
        assert!(c.iter().all(|&v| v == 100));
    }

    #[test]
    fn first_per_class_takes_dataset_order() {
        let labels = [0, 1, 0, 0, 1, 2, 2, 1];
        assert_eq!(
            first_per_class(&labels, 3, 2).unwrap(),
            vec![0, 1, 2, 4, 5, 6]
        );
        assert!(first_per_class(&labels, 3, 3).is_err());
        // --sample-size near usize::MAX: an error naming the class, no capacity overflow
        let e = first_per_class(&labels, 3, usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample-size") && e.contains("class 0"), "{e}");
        assert!(
            first_per_class(&labels, 2, 1).is_err(),
            "label 2 with K = 2"
        );
    }

    #[test]
    fn batch_normalises_replicates_and_augments_consistently() {
        let set = ImageSet {
            pixels: (0..2 * 16).map(|v| v as u8 * 8).collect(),
            labels: vec![4, 7],
            channels: 1,
            height: 4,
            width: 4,
        };
        let (x, y) = make_batch::<f64>(&set, &[1, 0], DatasetName::Mnist, None);
        assert_eq!(y, vec![7, 4]);
        let want = ((16.0 + 5.0) * 8.0 / 255.0 - 0.1307f32 as f64) / 0.3081f32 as f64;
        assert!((x[[0, 2, 1, 1]] - want).abs() < 1e-5);
        assert_eq!(x[[0, 0, 1, 1]], x[[0, 2, 1, 1]]);
        // augmentation: each output is a crop (offset 0..=8 of the zero-padded image) of the
        // source, maybe mirrored; checked against that definition by brute force
        let mut rng = StdRng::seed_from_u64(0);
        let src = [0usize, 1, 0, 1, 1, 0];
        let (xa, _) = make_batch::<f64>(&set, &src, DatasetName::Mnist, Some(&mut rng));
        let (plain, _) = make_batch::<f64>(&set, &[0, 1], DatasetName::Mnist, None);
        let zero = (0.0 - 0.1307f32 as f64) / 0.3081f32 as f64;
        let mut distinct = std::collections::HashSet::new();
        for (b, &s) in src.iter().enumerate() {
            let mut found = false;
            for dy in 0..9usize {
                for dx in 0..9usize {
                    for flip in [false, true] {
                        let ok = (0..4).all(|y| {
                            (0..4).all(|x| {
                                let xs = if flip { 3 - x } else { x };
                                let (sy, sx) =
                                    (y as isize + dy as isize - 4, xs as isize + dx as isize - 4);
                                let want = if (0..4).contains(&sy) && (0..4).contains(&sx) {
                                    plain[[s, 0, sy as usize, sx as usize]]
                                } else {
                                    zero
                                };
                                (xa[[b, 1, y, x]] - want).abs() < 1e-6
                            })
                        });
                        if ok {
                            found = true;
                        }
                    }
                }
            }
            assert!(
                found,
                "augmented image {b} is not a padded crop/flip of its source"
            );
            distinct.insert(format!("{:?}", xa.slice(ndarray::s![b, 0, .., ..])));
        }
        assert!(distinct.len() > 2, "augmentation should vary between draws");
    }
}
