//! Reading features, labels and classifiers written by NumPy, PyTorch or JAX.
//!
//! | format | features $H$ ($N\times d$) | labels $y$ ($N$) | classifier $W$ ($K\times d$), $b$ ($K$) |
//! |---|---|---|---|
//! | `.npy` | `f32`/`f64`, C or Fortran order, either byte order; **memory-mapped** (C order, native byte order) or **streamed** in row chunks | any integer dtype | `f32`/`f64` |
//! | `.safetensors` | tensor `features` (`F32`/`F64`); **streamed** | `labels` (`I64`/`I32`/...) | `W`, `b` |
//! | `.npz` (`np.savez`, `np.savez_compressed`) | array `features`; mapped or streamed like `.npy` when stored uncompressed (`np.savez`), read into memory when compressed | `labels` | `W`, `b` |
//!
//! A streamed file is never loaded whole: [`FeatureSource`] reads the header and checks that
//! the file holds all $N\cdot d$ values. A C-order array in the machine's byte order is then
//! **memory-mapped** and read in place from the page cache (no copy, no buffer; a second pass
//! costs no I/O while the file fits in memory, and larger files are paged in and out by the
//! kernel); any other layout, or [`FeatureSource::with_mmap`]`(false)` (`--no-mmap`), reads
//! row chunks on demand (a Fortran-order file column segment by column segment, transposed in
//! the chunk), so the memory beyond the accumulators is one chunk (default about 16 MiB).
//! Labels are read whole ($4N$ bytes as `u32`).
//!
//! **Bundles** (`.npz`, `.safetensors`) hold several arrays under these names:
//! features `features` ($N\times d$) or `H` (the paper's $d\times N$, as written by
//! `ufm solve --save`; an $N\times d$ `H` is recognised by its shape when $N\ne d$); labels
//! `labels` or `y`; classifier `W` (or `weight`, `fc.weight`); bias `b` (or `bias`, `fc.bias`);
//! and optionally a test split `test_features` and `test_labels`.
//!
//! Every error names the file and what is wrong with it.

use crate::error::{Error, Result};
use crate::metrics::{FeatureChunk, FeatureStream};
use memmap2::Mmap;
use ndarray::{Array1, Array2, ArrayD, ArrayView2, IxDyn, ShapeBuilder};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Element type of a stored array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `float32`.
    F32,
    /// `float64`.
    F64,
    /// Signed integer of this many bytes.
    Int(usize),
    /// Unsigned integer of this many bytes (1 = `uint8`/`bool`).
    UInt(usize),
    /// Anything else (named as in the file).
    Other(&'static str),
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Int(s) | Dtype::UInt(s) => s,
            Dtype::Other(_) => 0,
        }
    }
    fn name(self) -> String {
        match self {
            Dtype::F32 => "float32".into(),
            Dtype::F64 => "float64".into(),
            Dtype::Int(s) => format!("int{}", 8 * s),
            Dtype::UInt(s) => format!("uint{}", 8 * s),
            Dtype::Other(s) => s.into(),
        }
    }
}

/// A raw array inside a file: dtype, byte order, shape, order and where its data starts.
#[derive(Clone, Debug)]
pub struct RawArray {
    /// The file.
    pub path: PathBuf,
    /// Element type.
    pub dtype: Dtype,
    /// Big-endian data.
    pub big_endian: bool,
    /// Shape.
    pub shape: Vec<usize>,
    /// Column-major (Fortran) order.
    pub fortran: bool,
    /// Byte offset of the first element.
    pub offset: u64,
}

fn read_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io("read", path, e)
}

/// Parses the header of an `.npy` file (format versions 1, 2, 3) and checks that the file is
/// long enough for the data it announces.
pub fn npy_header(path: &Path) -> Result<RawArray> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let file_len = f.metadata().map_err(read_err(path))?.len();
    npy_header_in(path, &mut f, 0, file_len)
}

/// The `.npy` header of an array stored at bytes `base..end` of `f` (a whole `.npy` file, or
/// an uncompressed member of an `.npz` archive).
fn npy_header_in(path: &Path, f: &mut File, base: u64, end: u64) -> Result<RawArray> {
    f.seek(SeekFrom::Start(base)).map_err(read_err(path))?;
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .map_err(|_| Error::format(path, "too short to be a .npy file (no header)"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(Error::format(
            path,
            "not a .npy file (bad magic bytes); save with numpy.save",
        ));
    }
    let hlen = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            f.read_exact(&mut b)
                .map_err(|_| Error::format(path, "truncated .npy header"))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            f.read_exact(&mut b)
                .map_err(|_| Error::format(path, "truncated .npy header"))?;
            u32::from_le_bytes(b) as usize
        }
        v => {
            return Err(Error::format(
                path,
                format!("unsupported .npy format version {v}"),
            ))
        }
    };
    let mut h = vec![0u8; hlen];
    f.read_exact(&mut h)
        .map_err(|_| Error::format(path, "truncated .npy header"))?;
    let header = String::from_utf8_lossy(&h).into_owned();
    let offset = f.stream_position().map_err(read_err(path))?;
    let mut raw = parse_npy_dict(path, &header)?;
    raw.offset = offset;
    check_length(&raw, end)?;
    Ok(raw)
}

fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}'");
    let pat2 = format!("\"{key}\"");
    let i = header.find(&pat1).or_else(|| header.find(&pat2))? + pat1.len();
    let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

fn parse_descr(path: &Path, descr: &str) -> Result<(Dtype, bool)> {
    let bad = || Error::format(path, format!("unsupported dtype descriptor '{descr}'"));
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(bad)?;
    let big = match order {
        '<' | '|' | '=' => false,
        '>' => true,
        _ => return Err(bad()),
    };
    let code = &descr[1..];
    let dt = match code {
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i1" => Dtype::Int(1),
        "i2" => Dtype::Int(2),
        "i4" => Dtype::Int(4),
        "i8" => Dtype::Int(8),
        "u1" | "b1" => Dtype::UInt(1),
        "u2" => Dtype::UInt(2),
        "u4" => Dtype::UInt(4),
        "u8" => Dtype::UInt(8),
        "f2" => Dtype::Other("float16"),
        _ => Dtype::Other("a non-numeric or complex type"),
    };
    Ok((dt, big))
}

fn parse_npy_dict(path: &Path, header: &str) -> Result<RawArray> {
    let bad = |what: &str| Error::format(path, format!("malformed .npy header ({what}): {header}"));
    let descr_v = dict_value(header, "descr").ok_or_else(|| bad("no descr"))?;
    let q = descr_v.chars().next().ok_or_else(|| bad("descr"))?;
    if q != '\'' && q != '"' {
        return Err(Error::format(
            path,
            "structured dtypes are not supported; save a plain numeric array",
        ));
    }
    let end = descr_v[1..].find(q).ok_or_else(|| bad("descr"))?;
    let (dtype, big_endian) = parse_descr(path, &descr_v[1..1 + end])?;
    let fo = dict_value(header, "fortran_order").ok_or_else(|| bad("no fortran_order"))?;
    let fortran = if fo.starts_with("True") {
        true
    } else if fo.starts_with("False") {
        false
    } else {
        return Err(bad("fortran_order"));
    };
    let sh = dict_value(header, "shape").ok_or_else(|| bad("no shape"))?;
    let sh = sh.strip_prefix('(').ok_or_else(|| bad("shape"))?;
    let close = sh.find(')').ok_or_else(|| bad("shape"))?;
    let shape = sh[..close]
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad("shape"))?;
    Ok(RawArray {
        path: path.to_path_buf(),
        dtype,
        big_endian,
        shape,
        fortran,
        offset: 0,
    })
}

fn n_elements(raw: &RawArray) -> Result<u64> {
    raw.shape
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s as u64))
        .ok_or_else(|| Error::format(&raw.path, "array size overflows"))
}

fn check_length(raw: &RawArray, file_len: u64) -> Result<()> {
    let need = n_elements(raw)?
        .checked_mul(raw.dtype.size() as u64)
        .ok_or_else(|| Error::format(&raw.path, "array size overflows"))?;
    let have = file_len.saturating_sub(raw.offset);
    if have < need {
        return Err(Error::format(
            &raw.path,
            format!(
                "truncated: the header announces shape {:?} of {} ({need} bytes of data) but only {have} bytes follow",
                raw.shape,
                raw.dtype.name()
            ),
        ));
    }
    Ok(())
}

/// Parses the header of a `.safetensors` file and returns its tensors by name.
pub fn safetensors_header(path: &Path) -> Result<Vec<(String, RawArray)>> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let file_len = f.metadata().map_err(read_err(path))?.len();
    let mut b = [0u8; 8];
    f.read_exact(&mut b)
        .map_err(|_| Error::format(path, "too short to be a .safetensors file"))?;
    let hlen = u64::from_le_bytes(b);
    if hlen > file_len.saturating_sub(8) || hlen > 100_000_000 {
        return Err(Error::format(
            path,
            format!("not a .safetensors file (header length {hlen} exceeds the file)"),
        ));
    }
    let mut h = vec![0u8; hlen as usize];
    f.read_exact(&mut h).map_err(read_err(path))?;
    let json: serde_json::Value = serde_json::from_slice(&h)
        .map_err(|e| Error::format(path, format!("bad .safetensors header JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| Error::format(path, "the .safetensors header is not a JSON object"))?;
    let data_start = 8 + hlen;
    let mut out = Vec::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| Error::format(path, format!("tensor `{name}`: {what}"));
        let dt = v["dtype"].as_str().ok_or_else(|| bad("no dtype"))?;
        let dtype = match dt {
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I8" => Dtype::Int(1),
            "I16" => Dtype::Int(2),
            "I32" => Dtype::Int(4),
            "I64" => Dtype::Int(8),
            "U8" | "BOOL" => Dtype::UInt(1),
            "U16" => Dtype::UInt(2),
            "U32" => Dtype::UInt(4),
            "U64" => Dtype::UInt(8),
            "F16" => Dtype::Other("float16"),
            "BF16" => Dtype::Other("bfloat16"),
            _ => Dtype::Other("an unsupported safetensors dtype"),
        };
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|s| s.as_u64().map(|s| s as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("bad shape"))?;
        let offs = v["data_offsets"]
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad("no data_offsets"))?;
        let (s0, s1) = (
            offs[0].as_u64().ok_or_else(|| bad("bad data_offsets"))?,
            offs[1].as_u64().ok_or_else(|| bad("bad data_offsets"))?,
        );
        let raw = RawArray {
            path: path.to_path_buf(),
            dtype,
            big_endian: false,
            shape,
            fortran: false,
            offset: data_start + s0,
        };
        let need = n_elements(&raw)? * dtype.size() as u64;
        if dtype.size() > 0 && s1.saturating_sub(s0) != need {
            return Err(bad(&format!(
                "data_offsets span {} bytes but the shape needs {need}",
                s1.saturating_sub(s0)
            )));
        }
        check_length(&raw, file_len)?;
        out.push((name.clone(), raw));
    }
    Ok(out)
}

/// Decodes little/big-endian bytes of a float type into `f64`s or `f32`s.
fn decode_floats<T: FromBytes>(bytes: &[u8], big: bool, out: &mut [T]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
        *o = T::from_bytes(b, big);
    }
}

trait FromBytes: Copy + Default + Send + Sync {
    const SIZE: usize;
    fn from_bytes(b: &[u8], big: bool) -> Self;
}
impl FromBytes for f32 {
    const SIZE: usize = 4;
    fn from_bytes(b: &[u8], big: bool) -> Self {
        let a: [u8; 4] = b.try_into().expect("4 bytes");
        if big {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        }
    }
}
impl FromBytes for f64 {
    const SIZE: usize = 8;
    fn from_bytes(b: &[u8], big: bool) -> Self {
        let a: [u8; 8] = b.try_into().expect("8 bytes");
        if big {
            f64::from_be_bytes(a)
        } else {
            f64::from_le_bytes(a)
        }
    }
}

/// Reads a whole raw array as `f64` values in C (row-major) order.
fn read_raw_f64(raw: &RawArray) -> Result<(Vec<usize>, Vec<f64>)> {
    let n = n_elements(raw)? as usize;
    let mut f = File::open(&raw.path).map_err(|e| Error::io("open", &raw.path, e))?;
    f.seek(SeekFrom::Start(raw.offset))
        .map_err(read_err(&raw.path))?;
    let size = raw.dtype.size();
    let mut bytes = vec![0u8; n * size];
    f.read_exact(&mut bytes).map_err(read_err(&raw.path))?;
    let mut vals = vec![0f64; n];
    match raw.dtype {
        Dtype::F64 => decode_floats(&bytes, raw.big_endian, &mut vals),
        Dtype::F32 => {
            let mut v32 = vec![0f32; n];
            decode_floats(&bytes, raw.big_endian, &mut v32);
            vals.iter_mut().zip(&v32).for_each(|(a, &b)| *a = b as f64);
        }
        Dtype::Int(s) | Dtype::UInt(s) => {
            let signed = matches!(raw.dtype, Dtype::Int(_));
            for (o, b) in vals.iter_mut().zip(bytes.chunks_exact(s)) {
                let mut a = [0u8; 8];
                if raw.big_endian {
                    a[8 - s..].copy_from_slice(b);
                    a.reverse();
                } else {
                    a[..s].copy_from_slice(b);
                }
                let u = u64::from_le_bytes(a);
                *o = if signed {
                    let shift = 64 - 8 * s as u32;
                    (((u << shift) as i64) >> shift) as f64
                } else {
                    u as f64
                };
            }
        }
        Dtype::Other(t) => {
            return Err(Error::format(
                &raw.path,
                format!("unsupported element type {t}; convert to float32/float64"),
            ))
        }
    }
    if raw.fortran && raw.shape.len() > 1 {
        let a = ArrayD::from_shape_vec(IxDyn(&raw.shape).f(), vals)
            .map_err(|e| Error::format(&raw.path, e.to_string()))?;
        let c: Vec<f64> = a.iter().copied().collect();
        return Ok((raw.shape.clone(), c));
    }
    Ok((raw.shape.clone(), vals))
}

/// An array read into memory from a bundle or a file, with the file it came from.
#[derive(Clone, Debug)]
pub struct NamedArray {
    /// Where it came from (for messages): `file` or `file:name`.
    pub origin: String,
    /// The element type it was stored as.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values in C order, as `f64` (integers exactly up to $2^{53}$).
    pub values: Vec<f64>,
    /// `f32` values when stored as `float32` (kept for features, to stream them in `f32`).
    pub values_f32: Option<Vec<f32>>,
}

impl NamedArray {
    fn matrix(&self, what: &str) -> Result<Array2<f64>> {
        match self.shape.as_slice() {
            [r, c] => Ok(Array2::from_shape_vec((*r, *c), self.values.clone()).expect("shape")),
            s => Err(Error::Data(format!(
                "{}: {what} must be a 2-D array, got shape {s:?}",
                self.origin
            ))),
        }
    }
    fn vector(&self, what: &str) -> Result<Array1<f64>> {
        match self.shape.as_slice() {
            [_] => Ok(Array1::from(self.values.clone())),
            [n, 1] | [1, n] => Ok(Array1::from_shape_vec(*n, self.values.clone()).expect("n")),
            s => Err(Error::Data(format!(
                "{}: {what} must be a 1-D array, got shape {s:?}",
                self.origin
            ))),
        }
    }
}

/// Converts stored values to labels, checking they are non-negative integers.
pub fn to_labels(a: &NamedArray) -> Result<Vec<u32>> {
    let n = match a.shape.as_slice() {
        [n] | [n, 1] => *n,
        s => {
            return Err(Error::Data(format!(
                "{}: labels must be a 1-D array of class indices, got shape {s:?}",
                a.origin
            )))
        }
    };
    if matches!(a.dtype, Dtype::F32 | Dtype::F64) {
        return Err(Error::Data(format!(
            "{}: labels are {} but must be integers (save labels.astype(numpy.int64))",
            a.origin,
            a.dtype.name()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (i, &v) in a.values.iter().enumerate() {
        if v < 0.0 || v > u32::MAX as f64 {
            return Err(Error::Data(format!(
                "{}: label {v} at index {i} is not a class index in 0..K-1",
                a.origin
            )));
        }
        out.push(v as u32);
    }
    Ok(out)
}

fn load_npy_array(path: &Path) -> Result<NamedArray> {
    let raw = npy_header(path)?;
    let (shape, values) = read_raw_f64(&raw)?;
    Ok(NamedArray {
        origin: path.display().to_string(),
        dtype: raw.dtype,
        shape,
        values,
        values_f32: None,
    })
}

/// Reads labels from a `.npy` file (any integer dtype, shape $(N,)$ or $(N,1)$).
pub fn read_labels(path: &Path) -> Result<Vec<u32>> {
    to_labels(&load_npy_array(path)?)
}

/// Reads a $K\times d$ classifier from a `.npy` file (`f32`/`f64`, either order).
pub fn read_matrix(path: &Path) -> Result<Array2<f64>> {
    load_npy_array(path)?.matrix("the classifier W")
}

/// Reads a bias vector from a `.npy` file.
pub fn read_vector(path: &Path) -> Result<Array1<f64>> {
    load_npy_array(path)?.vector("the bias b")
}

/// Where feature rows come from.
#[derive(Clone, Debug)]
enum Backing {
    /// A raw array in a file, streamed.
    File(RawArray),
    /// A raw array in a memory-mapped file (C order, native byte order, aligned): the page
    /// cache is read in place, with no copy and no buffer.
    Mapped(RawArray, Arc<(File, Mmap)>),
    /// In memory, `f64`, C order, possibly to be read transposed.
    MemF64(Array2<f64>),
    /// In memory, `f32`.
    MemF32(Array2<f32>),
}

/// An $N\times d$ feature matrix on disk (streamed) or in memory; implements
/// [`FeatureStream`].
#[derive(Clone, Debug)]
pub struct FeatureSource {
    name: String,
    n: usize,
    d: usize,
    backing: Backing,
}

impl FeatureSource {
    /// Opens a `.npy` feature file (streamed; only the header is read now).
    pub fn open_npy(path: &Path) -> Result<Self> {
        let raw = npy_header(path)?;
        Self::from_raw(raw, path.display().to_string())
    }

    fn from_raw(raw: RawArray, name: String) -> Result<Self> {
        if !matches!(raw.dtype, Dtype::F32 | Dtype::F64) {
            return Err(Error::format(
                &raw.path,
                format!(
                    "features must be float32 or float64, got {}",
                    raw.dtype.name()
                ),
            ));
        }
        let (n, d) = match raw.shape.as_slice() {
            [n, d] => (*n, *d),
            s => {
                return Err(Error::format(
                    &raw.path,
                    format!("features must be a 2-D array (samples x feature dim), got shape {s:?}; flatten with features.reshape(len(features), -1)"),
                ))
            }
        };
        Ok(FeatureSource {
            name,
            n,
            d,
            backing: Backing::File(raw),
        }
        .with_mmap(true))
    }

    /// Reads the file through a memory map when its layout allows it (C order, native byte
    /// order, data aligned for its dtype) and the map succeeds; otherwise keeps streaming
    /// it in chunks. A mapped file is read in place from the page cache: no copy, no buffer,
    /// and a second pass costs no I/O while the file fits in memory (files larger than memory
    /// still work: the kernel pages them in and out). The file must not be truncated while it
    /// is mapped (the process would get `SIGBUS`); pass `mmap = false` (`--no-mmap`) for files
    /// that another program may rewrite during the run.
    pub fn with_mmap(self, mmap: bool) -> Self {
        let raw = match self.backing {
            Backing::File(raw) if mmap => raw,
            Backing::Mapped(raw, _) if !mmap => {
                return FeatureSource {
                    backing: Backing::File(raw),
                    ..self
                }
            }
            _ => return self,
        };
        let size = raw.dtype.size();
        let native = raw.big_endian == cfg!(target_endian = "big");
        let aligned = size > 0 && raw.offset % size as u64 == 0;
        let map = (native && !raw.fortran && aligned && self.n * self.d > 0)
            .then(|| File::open(&raw.path).ok())
            .flatten()
            // SAFETY: the map is only read, and only within the length checked against the
            // header (and again before every pass); the documented condition is that the file
            // is not truncated while a pass runs.
            .and_then(|f| unsafe { Mmap::map(&f) }.ok().map(|m| (f, m)))
            .filter(|(_, m)| m.len() as u64 >= raw.offset + (self.n * self.d * size) as u64);
        let backing = match map {
            Some((f, m)) => {
                #[cfg(unix)]
                let _ = m.advise(memmap2::Advice::Sequential);
                Backing::Mapped(raw, Arc::new((f, m)))
            }
            None => Backing::File(raw),
        };
        FeatureSource { backing, ..self }
    }

    /// Whether the rows are read through a memory map.
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mapped(..))
    }

    /// In-memory `f64` features ($N\times d$).
    pub fn from_array(name: impl Into<String>, a: Array2<f64>) -> Self {
        FeatureSource {
            name: name.into(),
            n: a.nrows(),
            d: a.ncols(),
            backing: Backing::MemF64(a),
        }
    }

    /// In-memory `f32` features ($N\times d$).
    pub fn from_array_f32(name: impl Into<String>, a: Array2<f32>) -> Self {
        FeatureSource {
            name: name.into(),
            n: a.nrows(),
            d: a.ncols(),
            backing: Backing::MemF32(a),
        }
    }

    /// Whether the rows are streamed from disk.
    pub fn is_streamed(&self) -> bool {
        matches!(self.backing, Backing::File(_) | Backing::Mapped(..))
    }

    fn read_rows(&self, raw: &RawArray, f: &mut File, r0: usize, r1: usize) -> Result<ChunkBuf> {
        let (n, d) = (self.n, self.d);
        let rows = r1 - r0;
        let sz = raw.dtype.size();
        let mut bytes = vec![0u8; rows * d * sz];
        let io = read_err(&raw.path);
        let trunc = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::format(&raw.path, "truncated while reading feature rows")
            } else {
                io(e)
            }
        };
        if !raw.fortran {
            f.seek(SeekFrom::Start(raw.offset + (r0 * d * sz) as u64))
                .map_err(&io)?;
            f.read_exact(&mut bytes).map_err(trunc)?;
        } else {
            // Column j holds rows 0..n contiguously: read the segment r0..r1 of each column.
            let mut seg = vec![0u8; rows * sz];
            for j in 0..d {
                f.seek(SeekFrom::Start(raw.offset + ((j * n + r0) * sz) as u64))
                    .map_err(&io)?;
                f.read_exact(&mut seg).map_err(trunc)?;
                for (i, v) in seg.chunks_exact(sz).enumerate() {
                    let o = (i * d + j) * sz;
                    bytes[o..o + sz].copy_from_slice(v);
                }
            }
        }
        Ok(match raw.dtype {
            Dtype::F32 => {
                let mut v = vec![0f32; rows * d];
                decode_floats(&bytes, raw.big_endian, &mut v);
                ChunkBuf::F32(Array2::from_shape_vec((rows, d), v).expect("shape"))
            }
            _ => {
                let mut v = vec![0f64; rows * d];
                decode_floats(&bytes, raw.big_endian, &mut v);
                ChunkBuf::F64(Array2::from_shape_vec((rows, d), v).expect("shape"))
            }
        })
    }
}

enum ChunkBuf {
    F32(Array2<f32>),
    F64(Array2<f64>),
}

impl FeatureStream for FeatureSource {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn in_memory(&self) -> bool {
        !matches!(self.backing, Backing::File(_))
    }
    fn whole(&self) -> Result<Option<FeatureChunk<'_>>> {
        Ok(match &self.backing {
            Backing::File(_) => None,
            Backing::MemF64(a) => Some(FeatureChunk::F64(a.view())),
            Backing::MemF32(a) => Some(FeatureChunk::F32(a.view())),
            Backing::Mapped(raw, fm) => {
                let (file, map) = (&fm.0, &fm.1);
                let (len, start) = (self.n * self.d, raw.offset as usize);
                let end = start + len * raw.dtype.size();
                // A file that shrank since it was opened would fault (SIGBUS) on the missing
                // pages: check before every pass.
                let now = file
                    .metadata()
                    .map_err(|e| Error::io("stat", &raw.path, e))?
                    .len();
                if now < end as u64 {
                    return Err(Error::format(
                        &raw.path,
                        format!("truncated while reading feature rows: the file shrank to {now} bytes after it was opened (it needs {end})"),
                    ));
                }
                let bytes = &map[start..end];
                // SAFETY: `with_mmap` only maps native-byte-order data whose offset is a
                // multiple of the element size (the map itself is page aligned), and checked
                // that the map holds all `len` elements; every bit pattern is a valid float.
                Some(match raw.dtype {
                    Dtype::F32 => {
                        let v = unsafe {
                            std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), len)
                        };
                        FeatureChunk::F32(
                            ArrayView2::from_shape((self.n, self.d), v).expect("shape"),
                        )
                    }
                    _ => {
                        let v = unsafe {
                            std::slice::from_raw_parts(bytes.as_ptr().cast::<f64>(), len)
                        };
                        FeatureChunk::F64(
                            ArrayView2::from_shape((self.n, self.d), v).expect("shape"),
                        )
                    }
                })
            }
        })
    }
    fn n_rows(&self) -> usize {
        self.n
    }
    fn feature_dim(&self) -> usize {
        self.d
    }
    fn for_each_chunk(
        &self,
        chunk_rows: usize,
        f: &mut dyn FnMut(usize, FeatureChunk<'_>) -> Result<()>,
    ) -> Result<()> {
        let step = chunk_rows.max(1);
        match &self.backing {
            Backing::MemF64(a) => crate::metrics::InMemory::from(a.view()).for_each_chunk(step, f),
            Backing::MemF32(a) => crate::metrics::InMemory::from(a.view()).for_each_chunk(step, f),
            Backing::Mapped(..) => {
                let whole = self.whole()?.expect("a mapped source has a view");
                crate::metrics::InMemory(whole).for_each_chunk(step, f)
            }
            Backing::File(raw) => {
                let mut file =
                    File::open(&raw.path).map_err(|e| Error::io("open", &raw.path, e))?;
                // Read the next chunk on a second thread while this one is processed.
                let mut r0 = 0;
                let mut next = if self.n > 0 {
                    Some(self.read_rows(raw, &mut file, 0, step.min(self.n))?)
                } else {
                    None
                };
                while let Some(cur) = next.take() {
                    let rows = match &cur {
                        ChunkBuf::F32(a) => a.nrows(),
                        ChunkBuf::F64(a) => a.nrows(),
                    };
                    let r1 = r0 + rows;
                    let (res, pre) = std::thread::scope(|sc| {
                        let file = &mut file;
                        let reader = sc.spawn(move || {
                            if r1 < self.n {
                                self.read_rows(raw, file, r1, (r1 + step).min(self.n))
                                    .map(Some)
                            } else {
                                Ok(None)
                            }
                        });
                        let res = match &cur {
                            ChunkBuf::F32(a) => f(r0, FeatureChunk::F32(a.view())),
                            ChunkBuf::F64(a) => f(r0, FeatureChunk::F64(a.view())),
                        };
                        let pre = reader.join().unwrap_or_else(|_| {
                            Err(Error::format(&raw.path, "the reader thread panicked"))
                        });
                        (res, pre)
                    });
                    res?;
                    next = pre?;
                    r0 = r1;
                }
                Ok(())
            }
        }
    }
}

/// Everything `ufm metrics` reads for one run: train features and labels, optional
/// classifier and optional test split.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Train features.
    pub features: FeatureSource,
    /// Train labels.
    pub labels: Vec<u32>,
    /// $W$ ($K\times d$).
    pub w: Option<Array2<f64>>,
    /// $b$ ($K$).
    pub b: Option<Array1<f64>>,
    /// Test features and labels.
    pub test: Option<(FeatureSource, Vec<u32>)>,
}

const FEATURE_NAMES: &[&str] = &["features", "H"];
const LABEL_NAMES: &[&str] = &["labels", "y"];
const W_NAMES: &[&str] = &["W", "weight", "fc.weight"];
const B_NAMES: &[&str] = &["b", "bias", "fc.bias"];

/// A bundle's arrays: raw (streamable) for safetensors, in memory for `.npz`.
enum Bundle {
    Raw(Vec<(String, RawArray)>),
    /// The archive, its array names, and the arrays stored uncompressed (`np.savez`), which
    /// are streamed or mapped like `.npy` files.
    Npz(PathBuf, Vec<String>, Vec<(String, RawArray)>),
}

/// The members of an `.npz` archive stored without compression (`np.savez`), as raw arrays
/// inside the archive file; compressed members (`np.savez_compressed`) are left out.
fn npz_stored_members(path: &Path) -> Result<Vec<(String, RawArray)>> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut za = zip::ZipArchive::new(f)
        .map_err(|e| Error::format(path, format!("not a readable .npz (zip) archive: {e}")))?;
    let mut spans = Vec::new();
    for i in 0..za.len() {
        let zf = za
            .by_index_raw(i)
            .map_err(|e| Error::format(path, format!("corrupt .npz member {i}: {e}")))?;
        if zf.compression() == zip::CompressionMethod::Stored {
            if let Some(name) = zf.name().strip_suffix(".npy") {
                spans.push((name.to_string(), zf.data_start(), zf.size()));
            }
        }
    }
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    spans
        .into_iter()
        .map(|(name, start, size)| {
            let raw = npy_header_in(path, &mut f, start, start + size)
                .map_err(|e| Error::format(path, format!("array `{name}`: {e}")))?;
            Ok((name, raw))
        })
        .collect()
}

impl Bundle {
    fn open(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "npz" => {
                let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
                let mut z = ndarray_npy::NpzReader::new(f).map_err(|e| {
                    Error::format(path, format!("not a readable .npz (zip) archive: {e}"))
                })?;
                let names = z.names().map_err(|e| npz_error(path, "", e))?;
                let stored = npz_stored_members(path)?;
                Ok(Bundle::Npz(path.to_path_buf(), names, stored))
            }
            "safetensors" => Ok(Bundle::Raw(safetensors_header(path)?)),
            _ => Err(Error::format(
                path,
                "unknown bundle type; expected .npz or .safetensors (use --features/--labels for .npy files)",
            )),
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Bundle::Raw(v) => v.iter().map(|(n, _)| n.clone()).collect(),
            Bundle::Npz(_, n, _) => n.clone(),
        }
    }

    fn find(&self, aliases: &[&str]) -> Option<String> {
        let names = self.names();
        aliases
            .iter()
            .find(|a| names.iter().any(|n| n == *a))
            .map(|s| s.to_string())
    }

    fn raw(&self, name: &str) -> Option<&RawArray> {
        match self {
            Bundle::Raw(v) | Bundle::Npz(_, _, v) => {
                v.iter().find(|(n, _)| n == name).map(|(_, r)| r)
            }
        }
    }

    fn load(&self, name: &str, keep_f32: bool) -> Result<NamedArray> {
        match self {
            Bundle::Raw(v) => {
                let raw = &v.iter().find(|(n, _)| n == name).expect("listed").1;
                let (shape, values) = read_raw_f64(raw)?;
                Ok(NamedArray {
                    origin: format!("{}:{name}", raw.path.display()),
                    dtype: raw.dtype,
                    shape,
                    values,
                    values_f32: None,
                })
            }
            Bundle::Npz(path, _, _) => npz_array(path, name, keep_f32),
        }
    }
}

fn npz_error(path: &Path, name: &str, e: ndarray_npy::ReadNpzError) -> Error {
    let msg = e.to_string();
    let arr = if name.is_empty() {
        String::new()
    } else {
        format!("array `{name}`: ")
    };
    if msg.contains("Compression method") {
        Error::format(
            path,
            format!("{arr}unsupported zip compression ({msg}); save with numpy.savez or numpy.savez_compressed, or as .npy files (which are also streamed)"),
        )
    } else {
        Error::format(path, format!("{arr}corrupt or unreadable .npz: {msg}"))
    }
}

fn npz_array(path: &Path, name: &str, keep_f32: bool) -> Result<NamedArray> {
    use ndarray_npy::{ReadNpyError, ReadNpzError};
    let origin = format!("{}:{name}", path.display());
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut z = ndarray_npy::NpzReader::new(f)
        .map_err(|e| Error::format(path, format!("not a readable .npz archive: {e}")))?;
    macro_rules! attempt {
        ($t:ty, $dt:expr) => {
            match z.by_name::<ndarray::OwnedRepr<$t>, IxDyn>(name) {
                Ok(a) => {
                    let shape = a.shape().to_vec();
                    let f32s: Option<Vec<f32>> = if keep_f32 && $dt == Dtype::F32 {
                        Some(a.iter().map(|&v| v as f32).collect())
                    } else {
                        None
                    };
                    let values: Vec<f64> = if f32s.is_some() {
                        Vec::new()
                    } else {
                        a.iter().map(|&v| v as f64).collect()
                    };
                    return Ok(NamedArray {
                        origin,
                        dtype: $dt,
                        shape,
                        values,
                        values_f32: f32s,
                    });
                }
                Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => {}
                Err(e) => return Err(npz_error(path, name, e)),
            }
        };
    }
    attempt!(f64, Dtype::F64);
    attempt!(f32, Dtype::F32);
    attempt!(i64, Dtype::Int(8));
    attempt!(i32, Dtype::Int(4));
    attempt!(i16, Dtype::Int(2));
    attempt!(i8, Dtype::Int(1));
    attempt!(u64, Dtype::UInt(8));
    attempt!(u32, Dtype::UInt(4));
    attempt!(u16, Dtype::UInt(2));
    attempt!(u8, Dtype::UInt(1));
    Err(Error::format(
        path,
        format!("array `{name}` has an unsupported dtype (need float32/float64 or integers)"),
    ))
}

/// Features from a bundle array: `features` is $N\times d$; `H` is $d\times N$ unless only
/// its first dimension matches the number of labels.
fn bundle_features(
    bundle: &Bundle,
    path: &Path,
    name: &str,
    n_labels: usize,
) -> Result<FeatureSource> {
    let origin = format!("{}:{name}", path.display());
    let transposed = |shape: &[usize]| -> Result<bool> {
        match shape {
            [a, b] => {
                if name == "H" {
                    Ok(!(*a == n_labels && *b != n_labels))
                } else {
                    Ok(false)
                }
            }
            s => Err(Error::format(
                path,
                format!("`{name}` must be 2-D (samples x feature dim), got shape {s:?}"),
            )),
        }
    };
    if let Some(raw) = bundle.raw(name) {
        if !transposed(&raw.shape)? {
            return FeatureSource::from_raw(raw.clone(), origin);
        }
    }
    let a = bundle.load(name, true)?;
    let t = transposed(&a.shape)?;
    if !matches!(a.dtype, Dtype::F32 | Dtype::F64) {
        return Err(Error::format(
            path,
            format!(
                "`{name}` must be float32 or float64, got {}",
                a.dtype.name()
            ),
        ));
    }
    let (r, c) = (a.shape[0], a.shape[1]);
    Ok(match a.values_f32 {
        Some(v) => {
            let m = Array2::from_shape_vec((r, c), v).expect("shape");
            FeatureSource::from_array_f32(origin, if t { m.reversed_axes() } else { m })
        }
        None => {
            let m = Array2::from_shape_vec((r, c), a.values).expect("shape");
            FeatureSource::from_array(origin, if t { m.reversed_axes() } else { m })
        }
    })
}

/// Opens a bundle (`.npz` or `.safetensors`; names in the [module docs](self)).
pub fn open_bundle(path: &Path) -> Result<Inputs> {
    let bundle = Bundle::open(path)?;
    let names = bundle.names();
    let missing = |what: &str, aliases: &[&str]| {
        Error::format(
            path,
            format!(
                "no {what} array (looked for {}); the file holds {names:?}",
                aliases.join(" or ")
            ),
        )
    };
    let ln = bundle
        .find(LABEL_NAMES)
        .ok_or_else(|| missing("labels", LABEL_NAMES))?;
    let labels = to_labels(&bundle.load(&ln, false)?)?;
    let fname = bundle
        .find(FEATURE_NAMES)
        .ok_or_else(|| missing("features", FEATURE_NAMES))?;
    let features = bundle_features(&bundle, path, &fname, labels.len())?;
    let w = match bundle.find(W_NAMES) {
        Some(n) => Some(bundle.load(&n, false)?.matrix("the classifier W")?),
        None => None,
    };
    let b = match bundle.find(B_NAMES) {
        Some(n) => Some(bundle.load(&n, false)?.vector("the bias b")?),
        None => None,
    };
    let test = match (
        bundle.find(&["test_features"]),
        bundle.find(&["test_labels"]),
    ) {
        (Some(f), Some(l)) => {
            let tl = to_labels(&bundle.load(&l, false)?)?;
            Some((bundle_features(&bundle, path, &f, tl.len())?, tl))
        }
        (None, None) => None,
        _ => {
            return Err(Error::format(
                path,
                "a test split needs both `test_features` and `test_labels`",
            ))
        }
    };
    Ok(Inputs {
        features,
        labels,
        w,
        b,
        test,
    })
}

/// Opens features from any supported file: a `.npy` file is streamed; for a bundle the
/// feature array is used and its other arrays ignored.
pub fn open_features(path: &Path) -> Result<FeatureSource> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "npy" {
        return FeatureSource::open_npy(path);
    }
    let bundle = Bundle::open(path)?;
    let fname = bundle
        .find(FEATURE_NAMES)
        .ok_or_else(|| Error::format(path, "no `features` or `H` array in the file".to_string()))?;
    let n = match bundle.find(LABEL_NAMES) {
        Some(l) => to_labels(&bundle.load(&l, false)?)?.len(),
        None => 0,
    };
    bundle_features(&bundle, path, &fname, n)
}
