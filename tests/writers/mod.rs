//! Writers of small valid files in every format `ufm` reads, for the bad-input and fuzz tests:
//! `.npy` (any version, dtype and order), `.npz` (stored or deflated, with numpy's zip64
//! local headers or without), `.safetensors`, IDX (plain, gzip, multi-member gzip), CIFAR-10
//! binary batches. Each is written from the format's specification, independently of the
//! readers under test.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// An `.npy` file: `descr` (e.g. `"<f8"`), order, shape, raw data bytes, format version
/// (1, 2 or 3). The header is padded with spaces to a multiple of 64 and ends with `\n`,
/// as numpy writes it.
pub fn npy(descr: &str, fortran: bool, shape: &[usize], data: &[u8], version: u8) -> Vec<u8> {
    let shape_s = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_s}, }}",
        if fortran { "True" } else { "False" }
    );
    npy_raw_header(&dict, data, version)
}

/// An `.npy` file with the given header dict text (padded as numpy does).
pub fn npy_raw_header(dict: &str, data: &[u8], version: u8) -> Vec<u8> {
    let prefix = if version == 1 { 10 } else { 12 };
    let mut h = dict.as_bytes().to_vec();
    let total = (prefix + h.len() + 1).div_ceil(64) * 64;
    h.resize(total - prefix - 1, b' ');
    h.push(b'\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.push(version);
    out.push(0);
    if version == 1 {
        out.extend((h.len() as u16).to_le_bytes());
    } else {
        out.extend((h.len() as u32).to_le_bytes());
    }
    out.extend(h);
    out.extend_from_slice(data);
    out
}

pub fn f64_le(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn f64_be(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}
pub fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn i64_le(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn i32_le(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A zip archive of `(name, bytes)` members, stored or deflated. With `numpy_zip64`, every
/// local header carries sizes 0xFFFFFFFF and a zip64 extra field, as `np.savez` writes
/// (`force_zip64=True`).
pub fn zip(members: &[(&str, Vec<u8>)], deflate: bool, numpy_zip64: bool) -> Vec<u8> {
    zip_with(members, deflate, numpy_zip64, false)
}

/// Like [`zip`]; with `zip64_end`, the central directory stores every local-header offset in
/// a zip64 extra field and the archive ends with zip64 end records (as writers do for
/// archives over 4 GiB or 65535 members).
pub fn zip_with(
    members: &[(&str, Vec<u8>)],
    deflate: bool,
    numpy_zip64: bool,
    zip64_end: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let crc = crc32fast::hash(data);
        let payload = if deflate {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.clone()
        };
        let method: u16 = if deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        let mut extra = Vec::new();
        if numpy_zip64 {
            extra.extend(1u16.to_le_bytes());
            extra.extend(16u16.to_le_bytes());
            extra.extend((data.len() as u64).to_le_bytes());
            extra.extend((payload.len() as u64).to_le_bytes());
        }
        let (lc, lu) = if numpy_zip64 {
            (u32::MAX, u32::MAX)
        } else {
            (payload.len() as u32, data.len() as u32)
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend(if numpy_zip64 { 45u16 } else { 20u16 }.to_le_bytes());
        out.extend(0u16.to_le_bytes()); // flags
        out.extend(method.to_le_bytes());
        out.extend([0u8; 4]); // time, date
        out.extend(crc.to_le_bytes());
        out.extend(lc.to_le_bytes());
        out.extend(lu.to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend((extra.len() as u16).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(&extra);
        out.extend(&payload);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // made by
        central.extend(20u16.to_le_bytes()); // needed
        central.extend(0u16.to_le_bytes());
        central.extend(method.to_le_bytes());
        central.extend([0u8; 4]);
        central.extend(crc.to_le_bytes());
        central.extend((payload.len() as u32).to_le_bytes());
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((name.len() as u16).to_le_bytes());
        central.extend(if zip64_end { 12u16 } else { 0 }.to_le_bytes()); // extra
        central.extend(0u16.to_le_bytes()); // comment
        central.extend(0u16.to_le_bytes()); // disk
        central.extend(0u16.to_le_bytes()); // internal attributes
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(if zip64_end { u32::MAX } else { offset }.to_le_bytes());
        central.extend(name.as_bytes());
        if zip64_end {
            central.extend(1u16.to_le_bytes());
            central.extend(8u16.to_le_bytes());
            central.extend((offset as u64).to_le_bytes());
        }
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    if zip64_end {
        let rec = out.len() as u64;
        out.extend(0x0606_4b50u32.to_le_bytes());
        out.extend(44u64.to_le_bytes());
        out.extend(45u16.to_le_bytes());
        out.extend(45u16.to_le_bytes());
        out.extend([0u8; 8]); // disks
        out.extend((members.len() as u64).to_le_bytes());
        out.extend((members.len() as u64).to_le_bytes());
        out.extend((central.len() as u64).to_le_bytes());
        out.extend((cd_offset as u64).to_le_bytes());
        out.extend(0x0706_4b50u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(rec.to_le_bytes());
        out.extend(1u32.to_le_bytes());
    }
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    let (count, size, off) = if zip64_end {
        (0xFFFF, u32::MAX, u32::MAX)
    } else {
        (members.len() as u16, central.len() as u32, cd_offset)
    };
    out.extend(count.to_le_bytes());
    out.extend(count.to_le_bytes());
    out.extend(size.to_le_bytes());
    out.extend(off.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// A `.safetensors` file from `(name, dtype, shape, data)` tensors laid out in order.
pub fn safetensors(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend(bytes);
    }
    safetensors_raw(&serde_json::Value::Object(header).to_string(), &data)
}

/// A `.safetensors` file with the given header text (padded with spaces to 8 bytes).
pub fn safetensors_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// An IDX image file: magic 2051, n, rows, cols, pixels.
pub fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051u32, n, rows, cols] {
        b.extend(v.to_be_bytes());
    }
    b.extend(pixels);
    b
}

/// An IDX label file: magic 2049, n, labels.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2049u32, labels.len() as u32] {
        b.extend(v.to_be_bytes());
    }
    b.extend(labels);
    b
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A gzip file of several members (as `cat a.gz b.gz` or pigz write), splitting `b` at
/// `cuts`.
pub fn gzip_multi(b: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&b.len())) {
        out.extend(gzip(&b[start..c]));
        start = c;
    }
    out
}

/// Deterministic MNIST-like pixels and labels.
pub fn mnist_like(n: usize, seed: usize) -> (Vec<u8>, Vec<u8>) {
    let px = (0..n * 784)
        .map(|i| ((i * 131 + seed * 17 + i / 784 * 7) % 256) as u8)
        .collect();
    let labels = (0..n).map(|i| ((i * 3 + seed) % 10) as u8).collect();
    (px, labels)
}

/// Writes a torchvision-layout MNIST folder (`root/MNIST/raw/*-ubyte[.gz]`) with `n_train`
/// and `n_test` images.
pub fn write_mnist(root: &Path, n_train: usize, n_test: usize, gz: bool) {
    let raw = root.join("MNIST").join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    for (prefix, n, seed) in [("train", n_train, 1), ("t10k", n_test, 2)] {
        let (px, labels) = mnist_like(n, seed);
        let imgs = idx_images(n as u32, 28, 28, &px);
        let labs = idx_labels(&labels);
        for (stem, bytes) in [
            (format!("{prefix}-images-idx3-ubyte"), imgs),
            (format!("{prefix}-labels-idx1-ubyte"), labs),
        ] {
            if gz {
                std::fs::write(raw.join(format!("{stem}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(raw.join(stem), bytes).unwrap();
            }
        }
    }
}

/// CIFAR-10 binary records (label byte + 3072 pixels).
pub fn cifar_records(n: usize, seed: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(n * 3073);
    for i in 0..n {
        b.push(((i + seed) % 10) as u8);
        b.extend((0..3072).map(|j| ((j * 7 + i * 13 + seed) % 256) as u8));
    }
    b
}

/// Writes `root/cifar-10-batches-bin/{data_batch_1,test_batch}.bin`.
pub fn write_cifar(root: &Path, n_train: usize, n_test: usize) {
    let d = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("data_batch_1.bin"), cifar_records(n_train, 1)).unwrap();
    std::fs::write(d.join("test_batch.bin"), cifar_records(n_test, 2)).unwrap();
}
