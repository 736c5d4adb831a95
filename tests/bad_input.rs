//! Claim: a corrupt or malicious input file is an error that names the file and the problem,
//! never a silent success with wrong numbers, a panic, or an allocation driven by a header
//! field (issue 12, parser part). Every file is built here, byte by byte, from the format's
//! specification (tests/writers).

mod writers;

use std::path::{Path, PathBuf};
use ufm::features::{self, FeatureSource};
use ufm::metrics::{FeatureChunk, FeatureStream};
use ufm::nn::data;
use writers::*;

const N: usize = 5;
const D: usize = 3;

fn h_vals() -> Vec<f64> {
    (0..N * D).map(|i| 0.5 * i as f64 - 2.0).collect()
}
fn labels() -> Vec<i64> {
    (0..N as i64).map(|i| i % 2).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The message of an error, checked to name the file.
fn err_of<T: std::fmt::Debug>(r: ufm::Result<T>, p: &Path) -> String {
    let e = r.expect_err("must be an error").to_string();
    let name = p.file_name().unwrap().to_str().unwrap();
    assert!(e.contains(name), "the error must name {name}: {e}");
    e
}

/// All rows of a feature source (f64), which forces every byte to be read.
fn rows(src: &FeatureSource) -> ufm::Result<Vec<f64>> {
    let mut out = Vec::new();
    src.for_each_chunk(2, &mut |_, c| {
        match c {
            FeatureChunk::F32(a) => out.extend(a.iter().map(|&v| v as f64)),
            FeatureChunk::F64(a) => out.extend(a.iter().copied()),
        }
        Ok(())
    })?;
    Ok(out)
}

fn bundle_members(h: Vec<u8>, extra: &[(&str, Vec<u8>)]) -> Vec<(&'static str, Vec<u8>)> {
    let mut m: Vec<(&'static str, Vec<u8>)> = vec![
        ("features.npy", h),
        ("labels.npy", npy("<i8", false, &[N], &i64_le(&labels()), 1)),
        (
            "W.npy",
            npy(
                "<f8",
                false,
                &[2, D],
                &f64_le(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                1,
            ),
        ),
        ("b.npy", npy("<f8", false, &[2], &f64_le(&[0.25, -0.5]), 1)),
    ];
    for (n, b) in extra {
        m.push((Box::leak(n.to_string().into_boxed_str()), b.clone()));
    }
    m
}

fn good_npz(deflate: bool) -> Vec<u8> {
    zip(
        &bundle_members(npy("<f8", false, &[N, D], &f64_le(&h_vals()), 1), &[]),
        deflate,
        true,
    )
}

/// Offset of the first occurrence of `needle` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> usize {
    from + hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("present")
}

#[test]
fn valid_files_written_here_are_read_exactly() {
    // The baseline every corruption below departs from.
    let dir = tempfile::tempdir().unwrap();
    let zip64_end = zip_with(
        &bundle_members(npy("<f8", false, &[N, D], &f64_le(&h_vals()), 1), &[]),
        false,
        true,
        true,
    );
    // the same archive read by the reference reader (the zip crate, through ndarray-npy)
    let p = write(dir.path(), "z64.npz", &zip64_end);
    let mut z = ndarray_npy::NpzReader::new(std::fs::File::open(&p).unwrap()).unwrap();
    let b: ndarray::Array1<f64> = z.by_name("b").unwrap();
    assert_eq!(b.to_vec(), vec![0.25, -0.5]);
    for bytes in [good_npz(false), good_npz(true), zip64_end] {
        let p = write(dir.path(), "ok.npz", &bytes);
        let inp = features::open_bundle(&p).unwrap();
        assert_eq!(rows(&inp.features).unwrap(), h_vals());
        assert_eq!(inp.labels, vec![0, 1, 0, 1, 0]);
        assert_eq!(inp.b.unwrap().to_vec(), vec![0.25, -0.5]);
        assert_eq!(inp.w.unwrap()[[1, 2]], 6.0);
    }
    for v in [1, 2, 3] {
        let p = write(
            dir.path(),
            "h.npy",
            &npy("<f8", false, &[N, D], &f64_le(&h_vals()), v),
        );
        assert_eq!(
            rows(&FeatureSource::open_npy(&p).unwrap()).unwrap(),
            h_vals()
        );
    }
    // Fortran order, big-endian
    let ft: Vec<f64> = (0..D)
        .flat_map(|j| (0..N).map(move |i| h_vals()[i * D + j]))
        .collect();
    let p = write(
        dir.path(),
        "hf.npy",
        &npy(">f8", true, &[N, D], &f64_be(&ft), 1),
    );
    assert_eq!(
        rows(&FeatureSource::open_npy(&p).unwrap()).unwrap(),
        h_vals()
    );
    let st = safetensors(&[
        ("features", "F64", vec![N, D], f64_le(&h_vals())),
        ("labels", "I64", vec![N], i64_le(&labels())),
    ]);
    let p = write(dir.path(), "ok.safetensors", &st);
    assert_eq!(
        rows(&features::open_bundle(&p).unwrap().features).unwrap(),
        h_vals()
    );
}

// ---------------------------------------------------------------- safetensors

#[test]
fn safetensors_offsets_that_wrap_or_run_past_the_data_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = f64_le(&h_vals());
    // begin > end: `end - begin` would wrap around
    for (offs, want) in [
        ("[120, 0]", "end before they begin"),
        ("[18446744073709551615, 119]", "end before they begin"),
        ("[18446744073709551495, 18446744073709551615]", "run past"),
        ("[8, 128]", "run past"),
        ("[0, 96]", "needs 120"),
    ] {
        let h =
            format!(r#"{{"features":{{"dtype":"F64","shape":[{N},{D}],"data_offsets":{offs}}}}}"#);
        let p = write(dir.path(), "wrap.safetensors", &safetensors_raw(&h, &data));
        let e = err_of(features::safetensors_header(&p), &p);
        assert!(e.contains(want), "{offs}: {e}");
        err_of(features::open_bundle(&p), &p);
    }
}

#[test]
fn overlapping_or_gapped_safetensors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = f64_le(&h_vals());
    // two tensors on the same bytes: each one is individually valid
    let h = r#"{"features":{"dtype":"F64","shape":[5,3],"data_offsets":[0,120]},
               "labels":{"dtype":"I64","shape":[5],"data_offsets":[40,80]}}"#;
    let p = write(
        dir.path(),
        "overlap.safetensors",
        &safetensors_raw(h, &data),
    );
    let e = err_of(features::open_bundle(&p), &p);
    assert!(e.contains("overlap") && e.contains("labels"), "{e}");
    // a gap before a tensor, and bytes after the last one
    let h = r#"{"labels":{"dtype":"I64","shape":[5],"data_offsets":[80,120]}}"#;
    let p = write(dir.path(), "gap.safetensors", &safetensors_raw(h, &data));
    assert!(err_of(features::safetensors_header(&p), &p).contains("unused bytes"));
    let h = r#"{"labels":{"dtype":"I64","shape":[5],"data_offsets":[0,40]}}"#;
    let p = write(dir.path(), "tail.safetensors", &safetensors_raw(h, &data));
    assert!(err_of(features::safetensors_header(&p), &p).contains("after the last tensor"));
    // the safetensors crate agrees that these files are invalid
    for name in ["overlap", "gap", "tail"] {
        let b = std::fs::read(dir.path().join(format!("{name}.safetensors"))).unwrap();
        assert!(safetensors::SafeTensors::deserialize(&b).is_err(), "{name}");
    }
}

#[test]
fn safetensors_header_length_json_and_dtypes_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = safetensors(&[("labels", "I64", vec![N], i64_le(&labels()))]);
    // header length beyond the file, and beyond the format's limit
    for hl in [u64::MAX, 1 << 40, good.len() as u64] {
        let mut b = good.clone();
        b[..8].copy_from_slice(&hl.to_le_bytes());
        let p = write(dir.path(), "hlen.safetensors", &b);
        assert!(err_of(features::safetensors_header(&p), &p).contains("header length"));
    }
    let p = write(dir.path(), "short.safetensors", &[1, 2, 3]);
    assert!(err_of(features::safetensors_header(&p), &p).contains("too short"));
    for (h, want) in [
        ("[1, 2]", "not a JSON object"),
        ("{\"labels\": 3}", "not a JSON object"),
        (
            r#"{"labels":{"dtype":"I64","shape":[5],"data_offsets":[0,40]},"labels":{"dtype":"I64","shape":[5],"data_offsets":[0,40]}}"#,
            "appears twice",
        ),
        (
            r#"{"labels":{"dtype":"I64","dtype":"I32","shape":[5],"data_offsets":[0,40]}}"#,
            "appears twice",
        ),
        (
            r#"{"labels":{"dtype":"Q64","shape":[5],"data_offsets":[0,40]}}"#,
            "unknown dtype",
        ),
        (
            r#"{"labels":{"dtype":"I64","shape":[-5],"data_offsets":[0,40]}}"#,
            "non-negative",
        ),
        (
            r#"{"labels":{"dtype":"I64","shape":[5.0],"data_offsets":[0,40]}}"#,
            "non-negative",
        ),
        (
            r#"{"labels":{"dtype":"I64","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,40]}}"#,
            "overflows",
        ),
        (
            r#"{"__metadata__":{"a":1},"labels":{"dtype":"I64","shape":[5],"data_offsets":[0,40]}}"#,
            "__metadata__",
        ),
        ("{\"labels\":", "JSON"),
    ] {
        let p = write(
            dir.path(),
            "hdr.safetensors",
            &safetensors_raw(h, &i64_le(&labels())),
        );
        let e = err_of(features::safetensors_header(&p), &p);
        assert!(e.contains(want), "{h}: {e}");
    }
}

// ---------------------------------------------------------------- npz

#[test]
fn a_flipped_bit_in_a_stored_npz_member_is_a_crc_error_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_npz(false);
    // a data byte of each member (the last byte before the next local header)
    for member in ["features.npy", "labels.npy", "W.npy", "b.npy"] {
        let name_at = find(&good, member.as_bytes(), 0);
        // data starts after the name and numpy's 20-byte zip64 extra field, then the npy header (128 bytes)
        let at = name_at + member.len() + 20 + 128 + 3;
        let mut b = good.clone();
        b[at] ^= 0x10;
        let p = write(dir.path(), "flip.npz", &b);
        let e = err_of(features::open_bundle(&p), &p);
        assert!(e.contains("CRC-32"), "{member}: {e}");
        if member == "features.npy" {
            // the memory-mapped/streamed feature path checks the CRC before use too
            let e = err_of(features::open_features(&p), &p);
            assert!(e.contains("CRC-32") && e.contains("`features`"), "{e}");
        }
    }
}

#[test]
fn a_flipped_bit_in_a_deflated_npz_member_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_npz(true);
    let name_at = find(&good, b"b.npy", 0);
    let mut errors = 0;
    // every byte of the deflated `b` member, one bit at a time: an error, or (a flip in the
    // unused bits after the deflate stream's end) exactly the original numbers
    let start = name_at + 5 + 20;
    let end = find(&good, b"PK\x01\x02", start);
    for at in start..end {
        let mut b = good.clone();
        b[at] ^= 0x04;
        let p = write(dir.path(), "flipc.npz", &b);
        match features::open_bundle(&p) {
            Err(e) => {
                assert!(e.to_string().contains("flipc.npz"), "{e}");
                errors += 1;
            }
            Ok(inp) => assert_eq!(
                inp.b.unwrap().to_vec(),
                vec![0.25, -0.5],
                "byte {at}: accepted with other numbers"
            ),
        }
    }
    assert!(
        errors + 1 >= end - start,
        "{errors} errors in {} flips",
        end - start
    );
}

#[test]
fn a_corrupt_member_name_is_an_error_not_a_missing_array() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_npz(false);
    // the central directory's copy of `b.npy` becomes `c.npy`: the array would go missing
    let cd = find(&good, b"PK\x01\x02", 0);
    let at = find(&good, b"b.npy", cd);
    let mut b = good.clone();
    b[at] = b'c';
    let p = write(dir.path(), "cdname.npz", &b);
    let e = err_of(features::open_bundle(&p), &p);
    assert!(e.contains("local header") && e.contains("b.npy"), "{e}");
    // a name that is not NAME.npy, a control character, invalid UTF-8, a duplicate
    for (name, want) in [
        ("b.npx", "not an array"),
        ("b\u{1}.npy", "control"),
        ("labels.npy", "twice"),
    ] {
        let m = bundle_members(
            npy("<f8", false, &[N, D], &f64_le(&h_vals()), 1),
            &[(name, npy("<f8", false, &[1], &f64_le(&[1.0]), 1))],
        );
        let p = write(dir.path(), "names.npz", &zip(&m, false, true));
        let e = err_of(features::open_bundle(&p), &p);
        assert!(e.contains(want), "{name}: {e}");
    }
    // a near-miss of an optional array's name: said, with the names found
    for (bad_name, alias) in [
        ("B.npy", "`b`"),
        ("bais.npy", "`bias`"),
        ("test_feature.npy", "test_features"),
    ] {
        let mut m = bundle_members(npy("<f8", false, &[N, D], &f64_le(&h_vals()), 1), &[]);
        m.retain(|(n, _)| *n != "b.npy");
        m.push((bad_name, npy("<f8", false, &[2], &f64_le(&[0.25, -0.5]), 1)));
        let p = write(dir.path(), "near.npz", &zip(&m, true, false));
        let e = err_of(features::open_bundle(&p), &p);
        assert!(
            e.contains(alias)
                && e.contains(bad_name.trim_end_matches(".npy"))
                && e.contains("\"labels\""),
            "{bad_name}: {e}"
        );
    }
}

#[test]
fn load_ufm_npz_does_not_skip_a_corrupt_bias() {
    let dir = tempfile::tempdir().unwrap();
    let p = ufm::ufm::UfmConfig::balanced(2, 2, 3).build().unwrap();
    let x: Vec<f64> = p.random_point(3, 1.0).unwrap();
    let path = dir.path().join("sol.npz");
    ufm::io::save_ufm_npz(&path, &p, &x).unwrap();
    assert_eq!(ufm::io::load_ufm_npz(&path, &p).unwrap(), x);
    let good = std::fs::read(&path).unwrap();
    // corrupt `b`'s name in the central directory, then (separately) one of its data bytes
    let cd = find(&good, b"PK\x01\x02", 0);
    let at = find(&good, b"b.npy", cd);
    let mut b = good.clone();
    b[at] = b'B';
    let bad = write(dir.path(), "name.npz", &b);
    err_of(ufm::io::load_ufm_npz(&bad, &p), &bad);
    let lh = find(&good, b"b.npy", 0);
    let data_end = find(&good, b"PK", lh + 5);
    let mut b = good.clone();
    b[data_end - 1] ^= 1;
    let bad = write(dir.path(), "data.npz", &b);
    let e = err_of(ufm::io::load_ufm_npz(&bad, &p), &bad);
    assert!(e.contains("CRC-32") || e.contains("`b`"), "{e}");
}

#[test]
fn compressed_members_inflate_only_to_their_declared_size() {
    let dir = tempfile::tempdir().unwrap();
    // (a) a member whose deflate stream holds more than the central directory declares:
    // 8 MB of zeros behind a valid 1-element header; the declared size covers only the header
    let mut big = npy("<f8", false, &[1], &f64_le(&[1.0]), 1);
    let declared = big.len();
    big.resize(8 << 20, 0);
    let mut z = zip(&[("labels.npy", big.clone())], true, false);
    let cd = find(&z, b"PK\x01\x02", 0);
    z[cd + 24..cd + 28].copy_from_slice(&(declared as u32).to_le_bytes());
    let p = write(dir.path(), "bomb.npz", &z);
    let e = err_of(ufm::npy::Npz::open(&p).and_then(|a| a.read("labels")), &p);
    assert!(e.contains("more than its declared"), "{e}");
    // (b) a declared size no deflate stream of this length can produce
    let mut z = zip(&[("labels.npy", big)], true, false);
    let cd = find(&z, b"PK\x01\x02", 0);
    z[cd + 24..cd + 28].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    let p = write(dir.path(), "claim.npz", &z);
    assert!(err_of(features::open_bundle(&p), &p).contains("more than"));
    // (c) an npy header inside the member that announces more than the member holds
    let m = npy_raw_header(
        "{'descr': '<i8', 'fortran_order': False, 'shape': (1000000000000,), }",
        &i64_le(&labels()),
        1,
    );
    let p = write(
        dir.path(),
        "inner.npz",
        &zip(&[("labels.npy", m)], true, false),
    );
    let e = err_of(ufm::npy::Npz::open(&p).and_then(|a| a.read("labels")), &p);
    assert!(e.contains("truncated") && e.contains("`labels`"), "{e}");
}

// ---------------------------------------------------------------- npy

#[test]
fn lax_npy_headers_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = i64_le(&labels());
    for (dict, want) in [
        (
            "{'descr': '<i8', 'fortran_order': Truee, 'shape': (5,), }",
            "Truee",
        ),
        (
            "{'descr': '<i8', 'fortran_order': False, 'fortran_order': True, 'shape': (5,), }",
            "twice",
        ),
        (
            "{'descr': '<i8', 'descr': '<f8', 'fortran_order': False, 'shape': (5,), }",
            "twice",
        ),
        ("{'descr': '<i8', 'shape': (5,), }", "fortran_order"),
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), 'extra': 1, }",
            "unexpected key",
        ),
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (5), }",
            "not a tuple",
        ),
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (-5,), }",
            "non-negative",
        ),
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (5.0,), }",
            "non-negative",
        ),
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (nan,), }",
            "non-negative",
        ),
        (
            "{'descr': '<i8', 'fortran_order': 0, 'shape': (5,), }",
            "True or False",
        ),
        (
            "{'descr': '<i9', 'fortran_order': False, 'shape': (5,), }",
            "unsupported dtype",
        ),
        (
            "{'descr': [('a', '<i8')], 'fortran_order': False, 'shape': (5,), }",
            "structured",
        ),
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            "overflows",
        ),
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }x",
            "after the dict",
        ),
    ] {
        let p = write(dir.path(), "y.npy", &npy_raw_header(dict, &data, 1));
        let e = err_of(features::read_labels(&p), &p);
        assert!(e.contains(want), "{dict}: {e}");
    }
    // padding other than spaces, a missing final newline, a bad version, trailing data
    let good = npy("<i8", false, &[5], &data, 1);
    let mut b = good.clone();
    b[70] = b'\t';
    let p = write(dir.path(), "tab.npy", &b);
    err_of(features::read_labels(&p), &p);
    let mut b = good.clone();
    b[127] = b' ';
    let p = write(dir.path(), "nl.npy", &b);
    assert!(err_of(features::read_labels(&p), &p).contains("newline"));
    let mut b = good.clone();
    b[7] = 1;
    let p = write(dir.path(), "ver.npy", &b);
    assert!(err_of(features::read_labels(&p), &p).contains("version 1.1"));
    let mut b = good.clone();
    b.extend([0u8; 8]);
    let p = write(dir.path(), "tail.npy", &b);
    assert!(err_of(features::read_labels(&p), &p).contains("8 bytes follow"));
    let p = write(dir.path(), "short.npy", &good[..good.len() - 1]);
    assert!(err_of(features::read_labels(&p), &p).contains("truncated"));
}

#[test]
fn a_huge_npy_header_length_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let good = npy("<f8", false, &[N, D], &f64_le(&h_vals()), 2);
    let mut b = good.clone();
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let p = write(dir.path(), "hlen.npy", &b);
    let e = err_of(FeatureSource::open_npy(&p), &p);
    assert!(e.contains("limit"), "{e}");
    // under the limit but beyond the file
    b[8..12].copy_from_slice(&(1u32 << 19).to_le_bytes());
    let p = write(dir.path(), "hlen2.npy", &b);
    let e = err_of(FeatureSource::open_npy(&p), &p);
    assert!(e.contains("truncated"), "{e}");
}

// ---------------------------------------------------------------- IDX / gzip / CIFAR

fn mnist_dir(train_imgs: Vec<u8>, train_labels: Vec<u8>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), 3, 2, true);
    let raw = dir.path().join("MNIST/raw");
    std::fs::write(raw.join("train-images-idx3-ubyte.gz"), gzip(&train_imgs)).unwrap();
    std::fs::write(raw.join("train-labels-idx1-ubyte.gz"), gzip(&train_labels)).unwrap();
    dir
}

fn mnist_err(dir: &tempfile::TempDir, file: &str) -> String {
    let e = data::load_mnist(dir.path())
        .expect_err("must be an error")
        .to_string();
    assert!(e.contains(file), "the error must name {file}: {e}");
    e
}

#[test]
fn idx_geometry_counts_labels_and_length_are_checked() {
    let (px, lab) = mnist_like(3, 1);
    let ok = mnist_dir(idx_images(3, 28, 28, &px), idx_labels(&lab));
    let d = data::load_mnist(ok.path()).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (3, 2));
    // 14x56 holds as many bytes as 28x28: the old length check alone accepted it
    let dir = mnist_dir(idx_images(3, 14, 56, &px), idx_labels(&lab));
    assert!(mnist_err(&dir, "train-images").contains("14x56"));
    let dir = mnist_dir(idx_images(3, 0, 0, &[]), idx_labels(&lab));
    assert!(mnist_err(&dir, "train-images").contains("0x0"));
    let dir = mnist_dir(idx_images(3, 28, 28, &px), idx_labels(&lab[..2]));
    assert!(mnist_err(&dir, "train-labels").contains("labels"));
    let mut bad = lab.clone();
    bad[1] = 10;
    let dir = mnist_dir(idx_images(3, 28, 28, &px), idx_labels(&bad));
    assert!(mnist_err(&dir, "train-labels").contains("outside 0..10"));
    // one extra byte, one missing byte, a label file in place of the images
    let mut long = idx_images(3, 28, 28, &px);
    long.push(0);
    let dir = mnist_dir(long, idx_labels(&lab));
    assert!(mnist_err(&dir, "train-images").contains("has more"));
    let dir = mnist_dir(idx_images(3, 28, 28, &px[1..]), idx_labels(&lab));
    assert!(mnist_err(&dir, "train-images").contains("has only"));
    let dir = mnist_dir(idx_labels(&lab), idx_labels(&lab));
    assert!(mnist_err(&dir, "train-images").contains("2051"));
}

#[test]
fn gzip_idx_headers_cannot_drive_allocation() {
    let (px, lab) = mnist_like(3, 1);
    // a header announcing 2^32-1 images: refused from the compressed size alone
    let dir = mnist_dir(idx_images(u32::MAX, 28, 28, &px), idx_labels(&lab));
    assert!(mnist_err(&dir, "train-images").contains("can hold"));
    // a stream longer than announced (a small header in front of 50 MB of zeros)
    let mut bomb = idx_images(3, 28, 28, &px);
    bomb.resize(50 << 20, 0);
    let dir = mnist_dir(bomb, idx_labels(&lab));
    assert!(mnist_err(&dir, "train-images").contains("has more"));
    // a corrupt gzip CRC
    let dir = mnist_dir(idx_images(3, 28, 28, &px), idx_labels(&lab));
    let p = dir.path().join("MNIST/raw/train-labels-idx1-ubyte.gz");
    let mut g = std::fs::read(&p).unwrap();
    let n = g.len();
    g[n - 6] ^= 1; // inside the CRC-32 of the trailer
    std::fs::write(&p, g).unwrap();
    assert!(mnist_err(&dir, "train-labels").contains("gzip"));
}

#[test]
fn multi_member_gzip_is_decoded_whole() {
    let (px, lab) = mnist_like(3, 1);
    let imgs = idx_images(3, 28, 28, &px);
    let one = mnist_dir(imgs.clone(), idx_labels(&lab));
    let multi = mnist_dir(imgs.clone(), idx_labels(&lab));
    std::fs::write(
        multi.path().join("MNIST/raw/train-images-idx3-ubyte.gz"),
        gzip_multi(&imgs, &[10, 16, 1000]),
    )
    .unwrap();
    let (a, b) = (
        data::load_mnist(one.path()).unwrap(),
        data::load_mnist(multi.path()).unwrap(),
    );
    assert_eq!(a.train.pixels, b.train.pixels);
    assert_eq!(a.train.labels, b.train.labels);
}

#[test]
fn cifar_batches_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 3, 2);
    assert_eq!(data::load_cifar10(dir.path()).unwrap().train.len(), 3);
    let p = dir.path().join("cifar-10-batches-bin/data_batch_1.bin");
    let mut b = cifar_records(3, 1);
    b[3073] = 200;
    std::fs::write(&p, &b).unwrap();
    let e = data::load_cifar10(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("data_batch_1.bin") && e.contains("label 200"),
        "{e}"
    );
    std::fs::write(&p, &b[..3073 * 2 + 5]).unwrap();
    let e = data::load_cifar10(dir.path()).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("3073"), "{e}");
}
