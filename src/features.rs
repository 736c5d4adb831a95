//! Reading features, labels and classifiers written by NumPy, PyTorch or JAX.
//!
//! | format | features $H$ ($N\times d$) | labels $y$ ($N$) | classifier $W$ ($K\times d$), $b$ ($K$) |
//! |---|---|---|---|
//! | `.npy` | `f32`/`f64`, C or Fortran order, either byte order; **memory-mapped** (C order, native byte order) or **streamed** in row chunks | any integer dtype | `f32`/`f64` |
//! | `.safetensors` | tensor `features` (`F32`/`F64`); **streamed** | `labels` (`I64`/`I32`/...) | `W`, `b` |
//! | `.npz` (`np.savez`, `np.savez_compressed`) | array `features`; mapped or streamed like `.npy` when stored uncompressed (`np.savez`, after one sequential pass that checks its CRC-32), read into memory when compressed | `labels` | `W`, `b` |
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
//! Every error names the file and what is wrong with it. Headers are parsed strictly and sizes
//! checked before anything is allocated: `.npy` headers and `.npz` archives as described in
//! [`crate::npy`] (exact data length, CRC-32 of every `.npz` member read), `.safetensors`
//! headers as in [`safetensors_header`] (offsets tile the data exactly). A bundle whose
//! optional array name looks like a misspelling of a known one (`B` for `b`, `bais`) is an
//! error that lists the names found, not a silently missing array.

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
    /// Bytes per element (0 for [`Dtype::Other`]).
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Int(s) | Dtype::UInt(s) => s,
            Dtype::Other(_) => 0,
        }
    }
    /// The numpy name (`float32`, `int64`, ...).
    pub fn name(self) -> String {
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

/// Parses the header of an `.npy` file (format versions 1.0, 2.0, 3.0) strictly (see
/// [`crate::npy`]) and checks that the file holds exactly the data it announces.
pub fn npy_header(path: &Path) -> Result<RawArray> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let file_len = f.metadata().map_err(read_err(path))?.len();
    npy_header_in(path, &mut f, 0, file_len, "")
}

/// The `.npy` header of an array stored at bytes `base..end` of `f` (a whole `.npy` file, or
/// a stored member of an `.npz` archive); `what` prefixes error messages.
fn npy_header_in(path: &Path, f: &mut File, base: u64, end: u64, what: &str) -> Result<RawArray> {
    f.seek(SeekFrom::Start(base)).map_err(read_err(path))?;
    let h = crate::npy::read_npy_header(
        &mut std::io::BufReader::new(&mut *f).take(end - base),
        end - base,
        path,
        what,
    )?;
    Ok(RawArray {
        path: path.to_path_buf(),
        dtype: h.dtype,
        big_endian: h.big_endian,
        shape: h.shape,
        fortran: h.fortran,
        offset: base + h.data_offset,
    })
}

fn n_elements(raw: &RawArray) -> Result<u64> {
    raw.shape
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s as u64))
        .ok_or_else(|| Error::format(&raw.path, "array size overflows"))
}

/// Element size in bits of a safetensors dtype, or `None` for a name the format does not
/// define; and the [`Dtype`] it is read as.
fn safetensors_dtype(name: &str) -> Option<(usize, Dtype)> {
    Some(match name {
        "F32" => (32, Dtype::F32),
        "F64" => (64, Dtype::F64),
        "I8" => (8, Dtype::Int(1)),
        "I16" => (16, Dtype::Int(2)),
        "I32" => (32, Dtype::Int(4)),
        "I64" => (64, Dtype::Int(8)),
        "U8" | "BOOL" => (8, Dtype::UInt(1)),
        "U16" => (16, Dtype::UInt(2)),
        "U32" => (32, Dtype::UInt(4)),
        "U64" => (64, Dtype::UInt(8)),
        "F16" => (16, Dtype::Other("float16")),
        "BF16" => (16, Dtype::Other("bfloat16")),
        "C64" => (64, Dtype::Other("complex64")),
        "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ" | "F8_E5M2FNUZ" => {
            (8, Dtype::Other("an 8-bit float type"))
        }
        "F6_E2M3" | "F6_E3M2" => (6, Dtype::Other("a 6-bit float type")),
        "F4" => (4, Dtype::Other("a 4-bit float type")),
        _ => return None,
    })
}

/// The format's own limit on the header (the `safetensors` crate's `MAX_HEADER_SIZE`).
const SAFETENSORS_MAX_HEADER: u64 = 100_000_000;

/// Parses the header of a `.safetensors` file and returns its tensors by name.
///
/// Checked as the `safetensors` crate validates a file, and more: the header length is
/// within the file and at most 100 MB (before anything is allocated); the header is a JSON
/// object without repeated keys; every tensor has a known dtype, a shape and `data_offsets`
/// `[begin, end]` with `begin <= end` and `end - begin` = elements x element size (checked
/// arithmetic); sorted by offset, the tensors tile the data section exactly (no overlap, no
/// gap, nothing after the last one); `__metadata__` maps strings to strings.
pub fn safetensors_header(path: &Path) -> Result<Vec<(String, RawArray)>> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let file_len = f.metadata().map_err(read_err(path))?.len();
    let mut b = [0u8; 8];
    f.read_exact(&mut b).map_err(|_| {
        Error::format(
            path,
            format!("too short to be a .safetensors file ({file_len} bytes)"),
        )
    })?;
    let hlen = u64::from_le_bytes(b);
    if hlen > file_len - 8 || hlen > SAFETENSORS_MAX_HEADER {
        return Err(Error::format(
            path,
            format!(
                "not a .safetensors file (header length {hlen} exceeds the file's {} bytes or the format's {SAFETENSORS_MAX_HEADER}-byte limit)",
                file_len - 8
            ),
        ));
    }
    let mut h = vec![0u8; hlen as usize];
    f.read_exact(&mut h).map_err(read_err(path))?;
    let json: StrictJson = serde_json::from_slice(&h)
        .map_err(|e| Error::format(path, format!("bad .safetensors header JSON: {e}")))?;
    let obj = json
        .0
        .as_object()
        .ok_or_else(|| Error::format(path, "the .safetensors header is not a JSON object"))?;
    let data_start = 8 + hlen;
    let data_len = file_len - data_start;
    let mut out = Vec::new();
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    for (name, v) in obj {
        let bad = |what: &str| Error::format(path, format!("tensor `{name}`: {what}"));
        if name == "__metadata__" {
            let ok = v.is_null()
                || v.as_object()
                    .is_some_and(|m| m.values().all(serde_json::Value::is_string));
            if !ok {
                return Err(Error::format(
                    path,
                    "`__metadata__` must map strings to strings",
                ));
            }
            continue;
        }
        let t = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
        let dt = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype"))?;
        let (bits, dtype) =
            safetensors_dtype(dt).ok_or_else(|| bad(&format!("unknown dtype `{dt}`")))?;
        let shape: Vec<usize> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|s| s.as_u64().and_then(|s| usize::try_from(s).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("the shape must be a list of non-negative integers"))?;
        let offs = t
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad("no data_offsets [begin, end]"))?;
        let (s0, s1) = match (offs[0].as_u64(), offs[1].as_u64()) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(bad("data_offsets must be two non-negative integers")),
        };
        let overflow = || {
            bad(&format!(
                "shape {shape:?} is too large (its byte size overflows)"
            ))
        };
        let nbits = shape
            .iter()
            .try_fold(1u64, |a, &s| a.checked_mul(s as u64))
            .and_then(|n| n.checked_mul(bits as u64))
            .ok_or_else(overflow)?;
        if nbits % 8 != 0 {
            return Err(bad(&format!(
                "shape {shape:?} of {dt} is not a whole number of bytes"
            )));
        }
        if s0 > s1 {
            return Err(bad(&format!(
                "data_offsets [{s0}, {s1}] end before they begin"
            )));
        }
        if s1 - s0 != nbits / 8 {
            return Err(bad(&format!(
                "data_offsets [{s0}, {s1}] span {} bytes but shape {shape:?} of {dt} needs {}",
                s1 - s0,
                nbits / 8
            )));
        }
        if s1 > data_len {
            return Err(bad(&format!(
                "data_offsets [{s0}, {s1}] run past the {data_len} bytes of data (truncated file?)"
            )));
        }
        spans.push((s0, s1, name));
        out.push((
            name.clone(),
            RawArray {
                path: path.to_path_buf(),
                dtype,
                big_endian: false,
                shape,
                fortran: false,
                offset: data_start + s0,
            },
        ));
    }
    // As the format requires (and the safetensors crate checks): sorted by offset, the
    // tensors cover the data section exactly, without overlap or gap.
    spans.sort();
    let mut pos = 0u64;
    let mut prev: Option<&str> = None;
    for &(s0, s1, name) in &spans {
        if s0 < pos {
            return Err(Error::format(
                path,
                format!(
                    "tensors `{}` and `{name}` overlap (bytes up to {pos} and from {s0})",
                    prev.unwrap_or("?")
                ),
            ));
        }
        if s0 > pos {
            return Err(Error::format(
                path,
                format!(
                    "{} unused bytes of data before tensor `{name}` (corrupt data_offsets?)",
                    s0 - pos
                ),
            ));
        }
        pos = s1;
        prev = Some(name);
    }
    if pos != data_len {
        return Err(Error::format(
            path,
            format!(
                "the tensors cover {pos} bytes but the data section holds {data_len} (truncated, or bytes after the last tensor)"
            ),
        ));
    }
    Ok(out)
}

/// A JSON value whose objects may not repeat a key (serde_json keeps the last one silently).
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(StrictJson(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(serde_json::Value::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut m = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("key `{k}` appears twice")));
            }
            let StrictJson(v) = map.next_value()?;
            m.insert(k, v);
        }
        Ok(serde_json::Value::Object(m))
    }
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
    check_supported(raw)?;
    let n = n_elements(raw)? as usize;
    let mut f = File::open(&raw.path).map_err(|e| Error::io("open", &raw.path, e))?;
    f.seek(SeekFrom::Start(raw.offset))
        .map_err(read_err(&raw.path))?;
    // the header parsers checked that the file holds these bytes
    let mut bytes = vec![0u8; n * raw.dtype.size()];
    f.read_exact(&mut bytes).map_err(read_err(&raw.path))?;
    Ok((raw.shape.clone(), decode_f64(raw, &bytes)?))
}

fn check_supported(raw: &RawArray) -> Result<()> {
    match raw.dtype {
        Dtype::Other(t) => Err(Error::format(
            &raw.path,
            format!("unsupported element type {t}; convert to float32/float64"),
        )),
        _ => Ok(()),
    }
}

/// Values in C order from data stored in `raw`'s order (a Fortran-order array is
/// transposed in memory).
fn to_c_order<T: Clone>(raw: &RawArray, vals: Vec<T>) -> Vec<T> {
    if raw.fortran && raw.shape.len() > 1 {
        let a = ArrayD::from_shape_vec(IxDyn(&raw.shape).f(), vals).expect("checked length");
        a.iter().cloned().collect()
    } else {
        vals
    }
}

/// Decodes the data bytes of a `raw` array into `f64`s in C order.
fn decode_f64(raw: &RawArray, bytes: &[u8]) -> Result<Vec<f64>> {
    check_supported(raw)?;
    let n = bytes.len() / raw.dtype.size().max(1);
    let mut vals = vec![0f64; n];
    match raw.dtype {
        Dtype::F64 => decode_floats(bytes, raw.big_endian, &mut vals),
        Dtype::F32 => {
            let mut v32 = vec![0f32; n];
            decode_floats(bytes, raw.big_endian, &mut v32);
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
        Dtype::Other(_) => {}
    }
    Ok(to_c_order(raw, vals))
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

/// Reads a whole `.npy` array of any supported dtype into memory (values as `f64`, C order).
pub fn read_npy_array(path: &Path) -> Result<NamedArray> {
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
    to_labels(&read_npy_array(path)?)
}

/// Reads a $K\times d$ classifier from a `.npy` file (`f32`/`f64`, either order).
pub fn read_matrix(path: &Path) -> Result<Array2<f64>> {
    read_npy_array(path)?.matrix("the classifier W")
}

/// Reads a bias vector from a `.npy` file.
pub fn read_vector(path: &Path) -> Result<Array1<f64>> {
    read_npy_array(path)?.vector("the bias b")
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
    Raw(PathBuf, Vec<(String, RawArray)>),
    /// The archive, and the arrays stored uncompressed (`np.savez`), which are streamed or
    /// mapped like `.npy` files once their CRC-32 is checked.
    Npz(crate::npy::Npz, Vec<(String, RawArray)>),
}

/// The members of an `.npz` archive stored without compression (`np.savez`), as raw arrays
/// inside the archive file; compressed members (`np.savez_compressed`) are left out.
fn npz_stored_members(npz: &crate::npy::Npz) -> Result<Vec<(String, RawArray)>> {
    let path = npz.path();
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    npz.members()
        .iter()
        .filter(|m| !m.deflated)
        .map(|m| {
            let what = format!("array `{}`: ", m.name);
            let raw = npy_header_in(path, &mut f, m.data_start, m.data_start + m.size, &what)?;
            Ok((m.name.clone(), raw))
        })
        .collect()
}

/// Whether `name` looks like a misspelling of `alias`: equal up to case, or (for aliases of
/// three or more letters) one edit or one swap of neighbours away.
fn near_miss(name: &str, alias: &str) -> bool {
    if name == alias {
        return false;
    }
    let (a, b): (Vec<char>, Vec<char>) = (
        name.to_lowercase().chars().collect(),
        alias.to_lowercase().chars().collect(),
    );
    if a == b {
        return true;
    }
    if b.len() < 3 {
        return false;
    }
    // optimal string alignment distance <= 1
    let (n, m) = (a.len(), b.len());
    if n.abs_diff(m) > 1 {
        return false;
    }
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=m {
        d[0][j] = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[n][m] <= 1
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
                let npz = crate::npy::Npz::open(path)?;
                let stored = npz_stored_members(&npz)?;
                Ok(Bundle::Npz(npz, stored))
            }
            "safetensors" => Ok(Bundle::Raw(path.to_path_buf(), safetensors_header(path)?)),
            _ => Err(Error::format(
                path,
                "unknown bundle type; expected .npz or .safetensors (use --features/--labels for .npy files)",
            )),
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Bundle::Raw(_, v) => v.iter().map(|(n, _)| n.clone()).collect(),
            Bundle::Npz(z, _) => z.names(),
        }
    }

    fn find(&self, aliases: &[&str]) -> Option<String> {
        let names = self.names();
        aliases
            .iter()
            .find(|a| names.iter().any(|n| n == *a))
            .map(|s| s.to_string())
    }

    /// Like [`Bundle::find`] for an optional array, but a name that looks like a misspelling
    /// of an alias (a corrupt or mistyped name) is an error rather than a silent omission.
    fn find_optional(&self, path: &Path, what: &str, aliases: &[&str]) -> Result<Option<String>> {
        if let Some(n) = self.find(aliases) {
            return Ok(Some(n));
        }
        let names = self.names();
        for n in &names {
            if let Some(a) = aliases.iter().find(|a| near_miss(n, a)) {
                return Err(Error::format(
                    path,
                    format!(
                        "no {what} array ({}), but the file holds `{n}`, which looks like a misspelt `{a}` (a corrupt or mistyped name); the file holds {names:?}; rename the array",
                        aliases.join(" or ")
                    ),
                ));
            }
        }
        Ok(None)
    }

    fn raw(&self, name: &str) -> Option<&RawArray> {
        match self {
            Bundle::Raw(_, v) | Bundle::Npz(_, v) => {
                v.iter().find(|(n, _)| n == name).map(|(_, r)| r)
            }
        }
    }

    /// Checks the CRC-32 of an `.npz` member before it is streamed in place (one sequential
    /// read of the member); a no-op for safetensors, which has no checksum.
    fn verify(&self, name: &str) -> Result<()> {
        match self {
            Bundle::Npz(z, _) => z.verify(name),
            Bundle::Raw(..) => Ok(()),
        }
    }

    fn load(&self, name: &str, keep_f32: bool) -> Result<NamedArray> {
        match self {
            Bundle::Raw(path, v) => {
                let raw = &v
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| Error::format(path, format!("no array `{name}`")))?
                    .1;
                let (shape, values) = read_raw_f64(raw)?;
                Ok(NamedArray {
                    origin: format!("{}:{name}", raw.path.display()),
                    dtype: raw.dtype,
                    shape,
                    values,
                    values_f32: None,
                })
            }
            Bundle::Npz(z, _) => npz_array(z, name, keep_f32),
        }
    }
}

/// Reads array `name` of an `.npz` archive into memory (size and CRC-32 checked).
pub fn npz_array(npz: &crate::npy::Npz, name: &str, keep_f32: bool) -> Result<NamedArray> {
    let (h, bytes) = npz.read(name)?;
    let raw = RawArray {
        path: npz.path().to_path_buf(),
        dtype: h.dtype,
        big_endian: h.big_endian,
        shape: h.shape,
        fortran: h.fortran,
        offset: 0,
    };
    let origin = format!("{}:{name}", npz.path().display());
    if keep_f32 && raw.dtype == Dtype::F32 {
        let mut v = vec![0f32; bytes.len() / 4];
        decode_floats(&bytes, raw.big_endian, &mut v);
        return Ok(NamedArray {
            origin,
            dtype: raw.dtype,
            values_f32: Some(to_c_order(&raw, v)),
            shape: raw.shape,
            values: Vec::new(),
        });
    }
    Ok(NamedArray {
        origin,
        dtype: raw.dtype,
        values: decode_f64(&raw, &bytes)?,
        shape: raw.shape,
        values_f32: None,
    })
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
            let src = FeatureSource::from_raw(raw.clone(), origin)?;
            bundle.verify(name)?;
            return Ok(src);
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
        if let Err(e) = bundle.find_optional(path, what, aliases) {
            return e;
        }
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
    let w = match bundle.find_optional(path, "classifier", W_NAMES)? {
        Some(n) => Some(bundle.load(&n, false)?.matrix("the classifier W")?),
        None => None,
    };
    let b = match bundle.find_optional(path, "bias", B_NAMES)? {
        Some(n) => Some(bundle.load(&n, false)?.vector("the bias b")?),
        None => None,
    };
    let test = match (
        bundle.find_optional(path, "test features", &["test_features"])?,
        bundle.find_optional(path, "test labels", &["test_labels"])?,
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
    let fname = match bundle.find_optional(path, "features", FEATURE_NAMES)? {
        Some(f) => f,
        None => {
            return Err(Error::format(
                path,
                format!(
                    "no `features` or `H` array; the file holds {:?}",
                    bundle.names()
                ),
            ))
        }
    };
    let n = match bundle.find(LABEL_NAMES) {
        Some(l) => to_labels(&bundle.load(&l, false)?)?.len(),
        None => 0,
    };
    bundle_features(&bundle, path, &fname, n)
}
