//! Strict readers for NumPy's `.npy` files and `.npz` archives.
//!
//! An `.npy` file (NEP 1, *A Simple File Format for NumPy Arrays*; numpy `lib/format.py`) is
//! the magic `\x93NUMPY`, a version byte pair (1.0, 2.0 or 3.0), the header length $L$
//! (`u16` little-endian in version 1.0, `u32` in 2.0 and 3.0), a header of $L$ bytes holding
//! the Python dict literal
//! `{'descr': '<f8', 'fortran_order': False, 'shape': (N, d), }` padded with spaces and
//! ended by `\n`, then exactly
//! $$\text{data bytes}=\text{itemsize}\cdot\prod_{i}s_i$$
//! bytes of data for the shape $(s_1,\dots,s_r)$ (computed with checked arithmetic).
//!
//! An `.npz` file (`np.savez`, `np.savez_compressed`) is a zip archive (PKWARE APPNOTE 6.3.x)
//! of members `NAME.npy`, each stored or deflated, each protected by a CRC-32
//! ($\mathrm{crc}(m)$, the IEEE polynomial `0xEDB88320`, over the uncompressed member $m$).
//!
//! What is checked, so that a corrupt file is an error and never a panic, a hang, a large
//! allocation or silently wrong numbers:
//!
//! * `.npy` header: magic, version (1.0, 2.0 or 3.0 exactly), header length at most
//!   [`MAX_HEADER_LEN`] and within the file *before* anything is allocated; the dict holds
//!   exactly the keys `descr`, `fortran_order`, `shape`, each once; `True`/`False` exactly;
//!   `shape` a tuple of non-negative decimal integers (a one-element tuple needs its comma)
//!   whose byte size does not overflow; `descr` one of the supported numeric types; after the
//!   dict only spaces and a final newline; and the data is exactly as long as announced.
//! * `.npz` archive: the end record, the central directory (entry count bounded by its size,
//!   zip64 fields where flagged), every member name is `NAME.npy` in ASCII or flagged UTF-8
//!   without control characters and appears once, it matches the name in the member's local
//!   header, members lie inside the archive before the central directory and do not overlap,
//!   only stored and deflated members, a stored member's sizes agree and a deflated member's
//!   declared size is possible for its compressed size (deflate expands at most 1032:1);
//!   reading a member stops at its declared size, errors when the stream is shorter or
//!   longer, and checks its CRC-32.

use crate::error::{Error, Result};
use crate::features::Dtype;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Longest `.npy` header accepted (1 MiB). numpy itself refuses headers over 10,000 bytes
/// unless asked (`max_header_size`); its writer pads headers to 64 bytes.
pub const MAX_HEADER_LEN: usize = 1 << 20;

/// Most dimensions of an array (numpy's `NPY_MAXDIMS` is 64).
const MAX_DIMS: usize = 64;

/// The parsed header of an `.npy` file or `.npz` member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: Dtype,
    /// Big-endian data.
    pub big_endian: bool,
    /// Column-major (Fortran) order.
    pub fortran: bool,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes from the magic to the first data byte (magic, version, length, header).
    pub data_offset: u64,
    /// Bytes of data: itemsize times the product of the shape.
    pub data_len: u64,
}

impl NpyHeader {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        // checked when the header was parsed (data_len = n * itemsize fits in u64)
        self.shape.iter().product()
    }
}

fn bad(path: &Path, what: &str, msg: impl std::fmt::Display) -> Error {
    Error::format(path, format!("{what}{msg}"))
}

/// Reads and checks an `.npy` header from `r`, which holds exactly `avail` bytes (a whole
/// `.npy` file, or one `.npz` member). Nothing larger than the header (at most
/// [`MAX_HEADER_LEN`], and at most `avail`) is allocated. `what` prefixes error messages
/// (for example ``"array `b`: "``). Checks that `avail` is exactly header plus data.
pub fn read_npy_header<R: Read>(
    r: &mut R,
    avail: u64,
    path: &Path,
    what: &str,
) -> Result<NpyHeader> {
    let short = |got: u64| {
        bad(
            path,
            what,
            format!(
                "too short to be a .npy array ({got} bytes; the header alone needs at least 10)"
            ),
        )
    };
    if avail < 10 {
        return Err(short(avail));
    }
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|e| bad(path, what, format!("cannot read the .npy header: {e}")))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad(
            path,
            what,
            "not a .npy file (bad magic bytes); save with numpy.save",
        ));
    }
    let (major, minor) = (magic[6], magic[7]);
    let (prefix, hlen) = match (major, minor) {
        (1, 0) => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|e| bad(path, what, format!("truncated .npy header: {e}")))?;
            (10u64, u16::from_le_bytes(b) as u64)
        }
        (2, 0) | (3, 0) => {
            if avail < 12 {
                return Err(short(avail));
            }
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|e| bad(path, what, format!("truncated .npy header: {e}")))?;
            (12u64, u32::from_le_bytes(b) as u64)
        }
        _ => {
            return Err(bad(
                path,
                what,
                format!(
                "unsupported .npy format version {major}.{minor} (numpy writes 1.0, 2.0 or 3.0)"
            ),
            ))
        }
    };
    if hlen > MAX_HEADER_LEN as u64 {
        return Err(bad(
            path,
            what,
            format!(
                "the .npy header length is {hlen} bytes, over the {MAX_HEADER_LEN}-byte limit (corrupt header length?)"
            ),
        ));
    }
    if prefix + hlen > avail {
        return Err(bad(
            path,
            what,
            format!(
                "truncated: the .npy header announces {hlen} header bytes but only {} follow",
                avail - prefix
            ),
        ));
    }
    let mut h = vec![0u8; hlen as usize];
    r.read_exact(&mut h)
        .map_err(|e| bad(path, what, format!("truncated .npy header: {e}")))?;
    let dict = parse_header(&h).map_err(|m| {
        let text = String::from_utf8_lossy(&h[..h.len().min(200)]).into_owned();
        let more = if h.len() > 200 { " ..." } else { "" };
        bad(
            path,
            what,
            format!("malformed .npy header ({m}): {}{more}", text.trim_end()),
        )
    })?;
    let (dtype, big_endian, fortran, shape) = dict;
    let overflow = || {
        bad(
            path,
            what,
            format!("the .npy shape {shape:?} is too large (its byte size overflows)"),
        )
    };
    let n = shape
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s as u64))
        .ok_or_else(overflow)?;
    let data_len = n.checked_mul(dtype.size() as u64).ok_or_else(overflow)?;
    let data_offset = prefix + hlen;
    let have = avail - data_offset;
    if have != data_len {
        let descr = dtype.name();
        return Err(bad(
            path,
            what,
            if have < data_len {
                format!("truncated: the header announces shape {shape:?} of {descr} ({data_len} bytes of data) but only {have} bytes follow")
            } else {
                format!(
                    "{} bytes follow the {data_len} bytes of data that the header announces (shape {shape:?} of {descr}): the file is corrupt or holds more than one array; save one array per file",
                    have - data_len
                )
            },
        ));
    }
    Ok(NpyHeader {
        dtype,
        big_endian,
        fortran,
        shape,
        data_offset,
        data_len,
    })
}

type HeaderDict = (Dtype, bool, bool, Vec<usize>);

/// A cursor over the header bytes with the few tokens of numpy's header dict.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn ws(&mut self) {
        while self.s.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8, what: &str) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{}` {what}", c as char))
        }
    }
    /// A quoted string without escapes, in printable ASCII.
    fn string(&mut self) -> std::result::Result<&'a str, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err("expected a quoted string".into()),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let s = &self.s[start..self.i];
                self.i += 1;
                // printable ASCII was checked byte by byte
                return Ok(std::str::from_utf8(s).expect("ASCII"));
            }
            if c == b'\\' || !(0x20..0x7f).contains(&c) {
                return Err("unexpected character in a string".into());
            }
            self.i += 1;
        }
        Err("unterminated string".into())
    }
    fn word(&mut self) -> &'a [u8] {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    /// A non-negative decimal integer (Python 2's `L` suffix allowed), fitting in `usize`.
    fn uint(&mut self) -> std::result::Result<usize, String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if !matches!(c, b' ' | b',' | b')' | b'}')) {
            self.i += 1;
        }
        let w = &self.s[start..self.i];
        let digits = w.strip_suffix(b"L").unwrap_or(w);
        if digits.is_empty()
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(format!(
                "shape entry `{}` is not a non-negative integer",
                String::from_utf8_lossy(w)
            ));
        }
        std::str::from_utf8(digits)
            .expect("digits")
            .parse::<usize>()
            .map_err(|_| {
                format!(
                    "shape entry {} is too large",
                    String::from_utf8_lossy(digits)
                )
            })
    }
}

/// Parses numpy's header dict (the bytes after the length field).
fn parse_header(h: &[u8]) -> std::result::Result<HeaderDict, String> {
    let body = h
        .strip_suffix(b"\n")
        .ok_or("the header does not end with a newline")?;
    let mut lx = Lexer { s: body, i: 0 };
    lx.ws();
    lx.expect(b'{', "to open the header dict")?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        lx.ws();
        if lx.eat(b'}') {
            break;
        }
        let key = lx.string()?;
        lx.ws();
        lx.expect(b':', &format!("after the key '{key}'"))?;
        lx.ws();
        let dup = |k: &str| format!("the key '{k}' appears twice");
        match key {
            "descr" => {
                if descr.is_some() {
                    return Err(dup(key));
                }
                if lx.peek() == Some(b'[') {
                    return Err(
                        "structured dtypes are not supported; save a plain numeric array".into(),
                    );
                }
                descr = Some(parse_descr(lx.string()?)?);
            }
            "fortran_order" => {
                if fortran.is_some() {
                    return Err(dup(key));
                }
                fortran = Some(match lx.word() {
                    b"True" => true,
                    b"False" => false,
                    w => {
                        return Err(format!(
                            "fortran_order is `{}`, not True or False",
                            String::from_utf8_lossy(w)
                        ))
                    }
                });
            }
            "shape" => {
                if shape.is_some() {
                    return Err(dup(key));
                }
                lx.expect(b'(', "to open the shape tuple")?;
                let mut dims = Vec::new();
                let mut trailing_comma = false;
                loop {
                    lx.ws();
                    if lx.eat(b')') {
                        break;
                    }
                    if dims.len() == MAX_DIMS {
                        return Err(format!("more than {MAX_DIMS} dimensions"));
                    }
                    dims.push(lx.uint()?);
                    lx.ws();
                    trailing_comma = lx.eat(b',');
                    if !trailing_comma {
                        lx.ws();
                        lx.expect(b')', "to close the shape tuple")?;
                        break;
                    }
                }
                if dims.len() == 1 && !trailing_comma {
                    return Err(format!(
                        "shape ({}) is an integer, not a tuple; numpy writes ({},)",
                        dims[0], dims[0]
                    ));
                }
                shape = Some(dims);
            }
            k => return Err(format!("unexpected key '{k}'")),
        }
        lx.ws();
        if !lx.eat(b',') {
            lx.ws();
            lx.expect(b'}', "to close the header dict")?;
            break;
        }
    }
    if let Some(c) = body[lx.i..].iter().find(|&&c| c != b' ') {
        return Err(format!(
            "unexpected byte 0x{c:02x} after the dict (only space padding may follow)"
        ));
    }
    let (dtype, big) = descr.ok_or("no 'descr' key")?;
    let fortran = fortran.ok_or("no 'fortran_order' key")?;
    let shape = shape.ok_or("no 'shape' key")?;
    Ok((dtype, big, fortran, shape))
}

/// The numeric types `ufm` reads, as numpy writes their `descr` (`'|'` or either byte order
/// for one-byte types, `'<'` or `'>'` otherwise).
fn parse_descr(d: &str) -> std::result::Result<(Dtype, bool), String> {
    let unsupported = || {
        format!("unsupported dtype '{d}'; save float32, float64 or integer arrays (e.g. array.astype(numpy.float32))")
    };
    let (order, code) = match d.as_bytes() {
        [o @ (b'<' | b'>' | b'|'), ..] => (*o, &d[1..]),
        _ => return Err(unsupported()),
    };
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
        "f2" => {
            return Err(format!(
                "float16 ('{d}') is not supported; convert to float32"
            ))
        }
        _ => return Err(unsupported()),
    };
    if order == b'|' && dt.size() != 1 {
        return Err(format!(
            "dtype '{d}' has no byte order ('<' or '>' is needed for multi-byte types)"
        ));
    }
    Ok((dt, order == b'>'))
}

/// One `NAME.npy` member of an `.npz` archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpzMember {
    /// The array name (the member name without `.npy`).
    pub name: String,
    /// Deflated (`np.savez_compressed`) rather than stored (`np.savez`).
    pub deflated: bool,
    /// CRC-32 of the uncompressed member, from the central directory.
    pub crc32: u32,
    /// Bytes of member data in the archive.
    pub compressed_size: u64,
    /// Bytes of the uncompressed member (the whole `.npy`).
    pub size: u64,
    /// Offset of the member's local header in the archive.
    pub header_offset: u64,
    /// Offset of the member's data in the archive.
    pub data_start: u64,
}

/// An `.npz` archive whose directory has been read and checked (see the [module
/// docs](self)); members are read on demand.
#[derive(Clone, Debug)]
pub struct Npz {
    path: PathBuf,
    members: Vec<NpzMember>,
}

/// Largest expansion of a deflate stream: one 258-byte match per 2 bits, about 1032:1.
const MAX_DEFLATE_RATIO: u64 = 1032;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Npz {
    /// Opens an `.npz` archive: reads and checks the end record, the central directory and
    /// every member's local header (names only; member data is read by [`Npz::read`] and
    /// [`Npz::verify`]).
    pub fn open(path: &Path) -> Result<Self> {
        let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = f.metadata().map_err(|e| Error::io("read", path, e))?.len();
        let zerr =
            |m: String| Error::format(path, format!("not a readable .npz (zip) archive: {m}"));
        let read_at = |f: &mut File, at: u64, n: usize| -> Result<Vec<u8>> {
            let mut b = vec![0u8; n];
            f.seek(SeekFrom::Start(at))
                .and_then(|_| f.read_exact(&mut b))
                .map_err(|e| Error::io("read", path, e))?;
            Ok(b)
        };
        // End of central directory record: 22 bytes + a comment of at most 65535 bytes.
        if len < 22 {
            return Err(zerr(format!("{len} bytes is too short for a zip archive")));
        }
        let tail_len = len.min(22 + 65535) as usize;
        let tail = read_at(&mut f, len - tail_len as u64, tail_len)?;
        let eocd = (0..=tail_len - 22)
            .rev()
            .find(|&i| {
                le32(&tail, i) == 0x0605_4b50 && i + 22 + le16(&tail, i + 20) as usize == tail_len
            })
            .ok_or_else(|| {
                zerr("no end-of-central-directory record (truncated or not a zip file)".into())
            })?;
        let e = &tail[eocd..];
        let eocd_pos = len - tail_len as u64 + eocd as u64;
        let (disk, cd_disk) = (le16(e, 4), le16(e, 6));
        let (mut n_disk, mut n_total) = (le16(e, 8) as u64, le16(e, 10) as u64);
        let (mut cd_size, mut cd_offset) = (le32(e, 12) as u64, le32(e, 16) as u64);
        let mut cd_end_expected = eocd_pos;
        if n_total == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            // zip64: a locator just before the end record points at the zip64 end record.
            if eocd_pos < 20 + 56 {
                return Err(zerr("zip64 end record missing".into()));
            }
            let loc = read_at(&mut f, eocd_pos - 20, 20)?;
            if le32(&loc, 0) != 0x0706_4b50 {
                return Err(zerr("zip64 end-record locator missing".into()));
            }
            let at = le64(&loc, 8);
            if at > eocd_pos - 20 - 56 {
                return Err(zerr("zip64 end record out of place".into()));
            }
            let z = read_at(&mut f, at, 56)?;
            if le32(&z, 0) != 0x0606_4b50
                || le64(&z, 4) < 44
                || at + 12 + le64(&z, 4) != eocd_pos - 20
            {
                return Err(zerr("bad zip64 end record".into()));
            }
            if le32(&z, 16) != 0 || le32(&z, 20) != 0 {
                return Err(zerr("multi-disk archives are not supported".into()));
            }
            n_disk = le64(&z, 24);
            n_total = le64(&z, 32);
            cd_size = le64(&z, 40);
            cd_offset = le64(&z, 48);
            cd_end_expected = at;
        } else if disk != 0 || cd_disk != 0 {
            return Err(zerr("multi-disk archives are not supported".into()));
        }
        if n_disk != n_total {
            return Err(zerr("multi-disk archives are not supported".into()));
        }
        if cd_offset.checked_add(cd_size) != Some(cd_end_expected) {
            return Err(zerr(format!(
                "the central directory ({cd_size} bytes at offset {cd_offset}) does not end where the end record is ({cd_end_expected})"
            )));
        }
        // Every central-directory entry takes at least 46 bytes.
        if n_total > cd_size / 46 {
            return Err(zerr(format!(
                "{n_total} entries cannot fit in a central directory of {cd_size} bytes"
            )));
        }
        let cd = read_at(&mut f, cd_offset, cd_size as usize)?;
        let mut members: Vec<NpzMember> = Vec::with_capacity(n_total as usize);
        let mut raw_names: Vec<Vec<u8>> = Vec::with_capacity(n_total as usize);
        let mut p = 0usize;
        for i in 0..n_total {
            let ent = |m: &str| zerr(format!("central directory entry {i}: {m}"));
            if p + 46 > cd.len() || le32(&cd, p) != 0x0201_4b50 {
                return Err(ent("bad signature or truncated"));
            }
            let flags = le16(&cd, p + 8);
            let method = le16(&cd, p + 10);
            let crc32 = le32(&cd, p + 16);
            let mut csize = le32(&cd, p + 20) as u64;
            let mut usize_ = le32(&cd, p + 24) as u64;
            let (nlen, xlen, clen) = (
                le16(&cd, p + 28) as usize,
                le16(&cd, p + 30) as usize,
                le16(&cd, p + 32) as usize,
            );
            let start_disk = le16(&cd, p + 34);
            let mut offset = le32(&cd, p + 42) as u64;
            let end = p + 46 + nlen + xlen + clen;
            if end > cd.len() {
                return Err(ent("truncated"));
            }
            let raw_name = &cd[p + 46..p + 46 + nlen];
            let extra = &cd[p + 46 + nlen..p + 46 + nlen + xlen];
            p = end;
            let name = member_name(raw_name, flags & (1 << 11) != 0).map_err(|m| ent(&m))?;
            let quoted = format!("member `{name}`");
            let merr = |m: String| zerr(format!("{quoted}: {m}"));
            // zip64 extended information: the 64-bit values of the fields set to all ones.
            let need64 = [
                usize_ == 0xFFFF_FFFF,
                csize == 0xFFFF_FFFF,
                offset == 0xFFFF_FFFF,
            ];
            if need64.iter().any(|&b| b) {
                let z = extra_field(extra, 0x0001)
                    .map_err(|m| merr(m.into()))?
                    .ok_or_else(|| merr("zip64 sizes flagged but no zip64 extra field".into()))?;
                let mut at = 0;
                for (k, field) in [&mut usize_, &mut csize, &mut offset]
                    .into_iter()
                    .enumerate()
                {
                    if need64[k] {
                        if at + 8 > z.len() {
                            return Err(merr("zip64 extra field too short".into()));
                        }
                        *field = le64(z, at);
                        at += 8;
                    }
                }
            } else {
                extra_field(extra, 0x0001).map_err(|m| merr(m.into()))?;
            }
            if start_disk != 0 && start_disk != 0xFFFF {
                return Err(merr("multi-disk archives are not supported".into()));
            }
            if flags & 1 != 0 {
                return Err(merr("encrypted members are not supported".into()));
            }
            let deflated = match method {
                0 => false,
                8 => true,
                m => {
                    return Err(merr(format!(
                        "compression method {m} is not supported; save with numpy.savez or numpy.savez_compressed"
                    )))
                }
            };
            if !deflated && csize != usize_ {
                return Err(merr(format!(
                    "stored member with compressed size {csize} but size {usize_}"
                )));
            }
            if deflated && usize_ > csize.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(64) {
                return Err(merr(format!(
                    "declares {usize_} bytes, more than {csize} deflated bytes can hold (corrupt size)"
                )));
            }
            let stem = name.strip_suffix(".npy").filter(|s| !s.is_empty()).ok_or_else(|| {
                merr("is not an array (an .npz holds only NAME.npy members, as numpy.savez writes)".into())
            })?;
            if members.iter().any(|m| m.name == stem) {
                return Err(merr("appears twice".into()));
            }
            members.push(NpzMember {
                name: stem.to_string(),
                deflated,
                crc32,
                compressed_size: csize,
                size: usize_,
                header_offset: offset,
                data_start: 0,
            });
            raw_names.push(raw_name.to_vec());
        }
        if p != cd.len() {
            return Err(zerr(format!(
                "{} unexplained bytes after {n_total} central directory entries",
                cd.len() - p
            )));
        }
        // Local headers: same name, data inside the archive, before the central directory.
        for (m, raw) in members.iter_mut().zip(&raw_names) {
            let merr = |s: String| zerr(format!("member `{}.npy`: {s}", m.name));
            if m.header_offset
                .checked_add(30)
                .is_none_or(|e| e > cd_offset)
            {
                return Err(merr(format!(
                    "local header offset {} is outside the archive",
                    m.header_offset
                )));
            }
            let lh = read_at(&mut f, m.header_offset, 30)?;
            if le32(&lh, 0) != 0x0403_4b50 {
                return Err(merr("bad local header signature".into()));
            }
            let method = le16(&lh, 8);
            let (nlen, xlen) = (le16(&lh, 26) as u64, le16(&lh, 28) as u64);
            let data_start = m.header_offset + 30 + nlen + xlen;
            if data_start
                .checked_add(m.compressed_size)
                .is_none_or(|e| e > cd_offset)
            {
                return Err(merr(format!(
                    "its data ({} bytes at offset {data_start}) runs past the member area (truncated or corrupt archive)",
                    m.compressed_size
                )));
            }
            let local_name = read_at(&mut f, m.header_offset + 30, nlen as usize)?;
            if &local_name != raw {
                return Err(merr(format!(
                    "its name in the central directory differs from its local header (`{}`): the archive is corrupt",
                    String::from_utf8_lossy(&local_name)
                )));
            }
            if method != if m.deflated { 8 } else { 0 } {
                return Err(merr(
                    "the compression method in the central directory differs from its local header"
                        .into(),
                ));
            }
            m.data_start = data_start;
        }
        let mut order: Vec<&NpzMember> = members.iter().collect();
        order.sort_by_key(|m| m.header_offset);
        for w in order.windows(2) {
            if w[0].data_start + w[0].compressed_size > w[1].header_offset {
                return Err(zerr(format!(
                    "members `{}.npy` and `{}.npy` overlap",
                    w[0].name, w[1].name
                )));
            }
        }
        Ok(Npz {
            path: path.to_path_buf(),
            members,
        })
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The members, in central-directory order.
    pub fn members(&self) -> &[NpzMember] {
        &self.members
    }

    /// The array names, in central-directory order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// The member holding array `name`.
    pub fn member(&self, name: &str) -> Option<&NpzMember> {
        self.members.iter().find(|m| m.name == name)
    }

    fn get(&self, name: &str) -> Result<&NpzMember> {
        self.member(name).ok_or_else(|| {
            Error::format(
                &self.path,
                format!("no array `{name}`; the file holds {:?}", self.names()),
            )
        })
    }

    /// A reader of the uncompressed member that errors (`InvalidData`) when the stream is
    /// shorter or longer than declared or its CRC-32 differs.
    fn reader(&self, m: &NpzMember) -> Result<MemberReader> {
        let mut f = File::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
        f.seek(SeekFrom::Start(m.data_start))
            .map_err(|e| Error::io("read", &self.path, e))?;
        let raw = f.take(m.compressed_size);
        let inner: Box<dyn Read> = if m.deflated {
            Box::new(flate2::read::DeflateDecoder::new(BufReader::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(MemberReader {
            inner,
            left: m.size,
            size: m.size,
            crc: crc32fast::Hasher::new(),
            want_crc: m.crc32,
            done: false,
        })
    }

    fn member_err(&self, name: &str, e: std::io::Error) -> Error {
        Error::format(&self.path, format!("array `{name}`: {e}"))
    }

    /// Reads array `name` whole: its checked header and its data bytes (the CRC-32 and the
    /// sizes are checked). At most the member's declared size is allocated, which is bounded
    /// by the archive size (stored) or 1032 times its compressed size (deflated).
    pub fn read(&self, name: &str) -> Result<(NpyHeader, Vec<u8>)> {
        let m = self.get(name)?;
        let mut r = self.reader(m)?;
        let what = format!("array `{name}`: ");
        let h = read_npy_header(&mut r, m.size, &self.path, &what)?;
        let mut data = Vec::with_capacity(h.data_len as usize);
        r.read_to_end(&mut data)
            .map_err(|e| self.member_err(name, e))?;
        Ok((h, data))
    }

    /// The checked header of array `name` (reads only the header; the CRC is not checked:
    /// call [`Npz::verify`] before trusting the data).
    pub fn header(&self, name: &str) -> Result<NpyHeader> {
        let m = self.get(name)?;
        let mut r = self.reader(m)?;
        read_npy_header(&mut r, m.size, &self.path, &format!("array `{name}`: "))
    }

    /// Reads member `name` to its end in one sequential pass and checks its size and CRC-32
    /// (used before a stored member is mapped or streamed in place; it costs one read of
    /// the member, which also warms the page cache for the pass that follows).
    pub fn verify(&self, name: &str) -> Result<()> {
        let m = self.get(name)?;
        let mut r = self.reader(m)?;
        let mut buf = vec![0u8; (1 << 20).min(m.size as usize + 1)];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.member_err(name, e)),
            }
        }
    }
}

/// The name of a central-directory entry: ASCII, or UTF-8 when flagged; no control
/// characters.
fn member_name(raw: &[u8], utf8: bool) -> std::result::Result<String, String> {
    let show = String::from_utf8_lossy(raw);
    let s = if utf8 {
        std::str::from_utf8(raw).map_err(|_| format!("member name `{show}` is not valid UTF-8"))?
    } else if raw.is_ascii() {
        std::str::from_utf8(raw).expect("ASCII")
    } else {
        return Err(format!(
            "member name `{show}` is neither ASCII nor flagged as UTF-8 (corrupt name?)"
        ));
    };
    if s.chars().any(char::is_control) {
        return Err(format!(
            "member name {s:?} contains control characters (corrupt name?)"
        ));
    }
    Ok(s.to_string())
}

/// The data of extra field `id` in a well-formed extra-field block.
fn extra_field(extra: &[u8], id: u16) -> std::result::Result<Option<&[u8]>, &'static str> {
    let mut at = 0;
    let mut found = None;
    while at < extra.len() {
        if at + 4 > extra.len() {
            return Err("malformed extra field");
        }
        let (fid, flen) = (le16(extra, at), le16(extra, at + 2) as usize);
        if at + 4 + flen > extra.len() {
            return Err("malformed extra field");
        }
        if fid == id {
            found = Some(&extra[at + 4..at + 4 + flen]);
        }
        at += 4 + flen;
    }
    Ok(found)
}

struct MemberReader {
    inner: Box<dyn Read>,
    left: u64,
    size: u64,
    crc: crc32fast::Hasher,
    want_crc: u32,
    done: bool,
}

impl Read for MemberReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Error as IoError, ErrorKind};
        if buf.is_empty() || self.done {
            return Ok(0);
        }
        if self.left == 0 {
            // The stream must end here, and the checksum must match.
            let mut one = [0u8; 1];
            let more = loop {
                match self.inner.read(&mut one) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            if more != 0 {
                return Err(IoError::new(
                    ErrorKind::InvalidData,
                    format!(
                        "the member decompresses to more than its declared {} bytes (corrupt archive)",
                        self.size
                    ),
                ));
            }
            let got = self.crc.clone().finalize();
            if got != self.want_crc {
                return Err(IoError::new(
                    ErrorKind::InvalidData,
                    format!(
                        "CRC-32 mismatch (stored {:08x}, computed {got:08x}): the member is corrupt",
                        self.want_crc
                    ),
                ));
            }
            self.done = true;
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(IoError::new(
                        ErrorKind::InvalidData,
                        format!("corrupt member data: {e}"),
                    ))
                }
                Ok(n) => break n,
            }
        };
        if n == 0 {
            return Err(IoError::new(
                ErrorKind::InvalidData,
                format!(
                    "truncated: the member ends after {} of its declared {} bytes",
                    self.size - self.left,
                    self.size
                ),
            ));
        }
        self.crc.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dict: &str) -> std::result::Result<HeaderDict, String> {
        parse_header(format!("{dict}   \n").as_bytes())
    }

    #[test]
    fn numpy_headers_parse() {
        let (dt, big, f, s) =
            header("{'descr': '<f8', 'fortran_order': False, 'shape': (23, 6), }").unwrap();
        assert_eq!((dt, big, f, s), (Dtype::F64, false, false, vec![23, 6]));
        let (dt, big, f, s) =
            header("{\"shape\":(5,),\"fortran_order\":True,\"descr\":\">i4\"}").unwrap();
        assert_eq!((dt, big, f, s), (Dtype::Int(4), true, true, vec![5]));
        assert_eq!(
            header("{'descr': '|u1', 'fortran_order': False, 'shape': ()}")
                .unwrap()
                .3,
            Vec::<usize>::new()
        );
        assert_eq!(
            header("{'descr': '<i8', 'fortran_order': False, 'shape': (3L, 0L), }")
                .unwrap()
                .3,
            vec![3, 0]
        );
    }

    #[test]
    fn lax_headers_are_rejected() {
        for (h, want) in [
            (
                "{'descr': '<f8', 'fortran_order': Truee, 'shape': (2,), }",
                "Truee",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'fortran_order': False, 'shape': (2,), }",
                "twice",
            ),
            ("{'descr': '<f8', 'fortran_order': True, }", "no 'shape'"),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (2), }",
                "not a tuple",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (-2,), }",
                "non-negative",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (02,), }",
                "non-negative",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (99999999999999999999999,), }",
                "too large",
            ),
            (
                "{'descr': '<c16', 'fortran_order': True, 'shape': (2,), }",
                "unsupported dtype",
            ),
            (
                "{'descr': '|f8', 'fortran_order': True, 'shape': (2,), }",
                "byte order",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (2,), 'x': 1}",
                "unexpected key",
            ),
            (
                "{'descr': '<f8', 'fortran_order': True, 'shape': (2,), } x",
                "after the dict",
            ),
        ] {
            let e = header(h).unwrap_err();
            assert!(e.contains(want), "{h}: {e}");
        }
        // padding must be spaces and a final newline
        assert!(
            parse_header(b"{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }  ")
                .unwrap_err()
                .contains("newline")
        );
        assert!(
            parse_header(b"{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }\t\n").is_err()
        );
    }
}
