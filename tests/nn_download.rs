//! `nn::download` without the internet: a tiny HTTP/1.1 server on 127.0.0.1 (a thread with
//! `std::net::TcpListener`, at most 64 connections, stops by itself after 60 s) serves generated
//! MNIST IDX files and a CIFAR-10 `.tar.gz`; the downloader is pointed at it through
//! [`Source`]. Checks: good downloads land, verify and load; a wrong checksum, a truncated
//! body or a refused connection is an error naming the folder to fill by hand and leaves no
//! file behind; mirrors are tried in order; present files are not fetched again.

use flate2::write::GzEncoder;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ufm::nn::data::{load_cifar10, load_mnist, DatasetName};
use ufm::nn::download::{download_from, md5_file, md5_hex, RemoteFile, Source};

#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    /// announces 1000 more bytes than it sends, then closes
    Truncated(Vec<u8>),
}

struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

fn serve(routes: HashMap<String, Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut served = 0;
        while served < 64 && t0.elapsed() < Duration::from_secs(60) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            h.fetch_add(1, Ordering::SeqCst);
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (head, body) = match routes.get(&path) {
                Some(Reply::Ok(b)) => (format!("200 OK\r\nContent-Length: {}", b.len()), b.clone()),
                Some(Reply::Truncated(b)) => (
                    format!("200 OK\r\nContent-Length: {}", b.len() + 1000),
                    b.clone(),
                ),
                None => ("404 Not Found\r\nContent-Length: 0".to_string(), vec![]),
            };
            let _ = s.write_all(format!("HTTP/1.1 {head}\r\nConnection: close\r\n\r\n").as_bytes());
            let _ = s.write_all(&body);
        }
    });
    Server { base, hits }
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Valid IDX files: (name without .gz, bytes); `n` images of 28×28 with pixel (i*7 + j) % 256.
fn mnist_files(n_train: usize, n_test: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut im = vec![];
        for v in [2051u32, n as u32, 28, 28] {
            im.extend_from_slice(&v.to_be_bytes());
        }
        im.extend((0..n * 784).map(|j| ((j * 7) % 256) as u8));
        let mut lb = vec![];
        for v in [2049u32, n as u32] {
            lb.extend_from_slice(&v.to_be_bytes());
        }
        lb.extend((0..n).map(|i| (i % 10) as u8));
        out.push((format!("{prefix}-images-idx3-ubyte"), im));
        out.push((format!("{prefix}-labels-idx1-ubyte"), lb));
    }
    out
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// RFC 1321's test suite, and the streamed file hash equals the in-memory one.
#[test]
fn md5_matches_rfc1321() {
    for (m, want) in [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ] {
        assert_eq!(md5_hex(m.as_bytes()), want, "{m:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("f");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &big).unwrap();
    assert_eq!(md5_file(&p).unwrap(), md5_hex(&big));
}

/// The four MNIST files come from the second mirror (the first answers 404), verify, land in
/// `<data-dir>/MNIST/raw/` with no temporary file left, and load; a second run fetches
/// nothing; a present file with a wrong md5 is fetched again.
#[test]
fn mnist_download_lands_verifies_and_loads() {
    let files = mnist_files(20, 10);
    let mut routes = HashMap::new();
    let mut src_files = vec![];
    for (name, bytes) in &files {
        let z = gz(bytes);
        src_files.push(RemoteFile {
            name: format!("{name}.gz"),
            md5: md5_hex(&z),
        });
        routes.insert(format!("/good/{name}.gz"), Reply::Ok(z));
    }
    let srv = serve(routes);
    let src = Source {
        mirrors: vec![format!("{}/gone/", srv.base), format!("{}/good/", srv.base)],
        files: src_files,
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut lines = vec![];
    let rep = download_from(DatasetName::Mnist, tmp.path(), &src, &mut |m| {
        lines.push(m.to_string())
    })
    .unwrap();
    assert_eq!(rep.fetched.len(), 4);
    let raw = tmp.path().join("MNIST/raw");
    let want: Vec<String> = {
        let mut v: Vec<String> = files.iter().map(|(n, _)| format!("{n}.gz")).collect();
        v.sort();
        v
    };
    assert_eq!(listing(&raw), want, "only the final files");
    assert!(lines.iter().any(|l| l.contains("/gone/")), "{lines:?}");
    let d = load_mnist(tmp.path()).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (20, 10));
    assert_eq!(d.test.labels[3], 3);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 8, "404 then 200 per file");
    let rep = download_from(DatasetName::Mnist, tmp.path(), &src, &mut |_| {}).unwrap();
    assert_eq!((rep.fetched.len(), rep.present.len()), (0, 4));
    assert_eq!(
        srv.hits.load(Ordering::SeqCst),
        8,
        "present files are not fetched"
    );
    // a present file that fails its md5 is fetched again (and replaced atomically)
    let bad = raw.join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&bad, b"junk").unwrap();
    let rep = download_from(DatasetName::Mnist, tmp.path(), &src, &mut |_| {}).unwrap();
    assert_eq!(rep.fetched, vec![bad.clone()]);
    assert_eq!(md5_file(&bad).unwrap(), src.files[3].md5);
    assert_eq!(listing(&raw), want);
}

/// A body whose md5 differs, or that ends early, is an error that says what happened and
/// where to put the files by hand; nothing is left in the folder (no final name, no temp).
#[test]
fn checksum_mismatch_or_truncation_is_an_error_and_leaves_nothing() {
    let files = mnist_files(4, 2);
    let z = gz(&files[0].1);
    let mut routes = HashMap::new();
    routes.insert(format!("/m/{}.gz", files[0].0), Reply::Ok(z.clone()));
    routes.insert(format!("/t/{}.gz", files[0].0), Reply::Truncated(z.clone()));
    let srv = serve(routes);
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("MNIST/raw");
    let wrong = Source {
        mirrors: vec![format!("{}/m/", srv.base)],
        files: vec![RemoteFile {
            name: format!("{}.gz", files[0].0),
            md5: "0123456789abcdef0123456789abcdef".into(),
        }],
    };
    let e = download_from(DatasetName::Mnist, tmp.path(), &wrong, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("md5 {}", md5_hex(&z)))
            && e.contains("expected 0123456789abcdef0123456789abcdef"),
        "{e}"
    );
    assert!(
        e.contains("place the four MNIST files") && e.contains(&raw.display().to_string()),
        "{e}"
    );
    assert_eq!(listing(&raw), Vec::<String>::new());
    let truncated = Source {
        mirrors: vec![format!("{}/t/", srv.base)],
        files: vec![RemoteFile {
            name: format!("{}.gz", files[0].0),
            md5: md5_hex(&z),
        }],
    };
    let e = download_from(DatasetName::Mnist, tmp.path(), &truncated, &mut |_| {})
        .unwrap_err()
        .to_string();
    eprintln!("truncated body: {e}");
    assert!(
        e.contains("cannot download") && e.contains("nothing was written"),
        "{e}"
    );
    assert_eq!(listing(&raw), Vec::<String>::new());
}

/// No server at the address: the error names the URL, the reason and the manual steps.
#[test]
fn connection_refused_gives_the_manual_steps() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let src =
        Source::official(DatasetName::Cifar10).with_mirror(&format!("http://127.0.0.1:{port}"));
    let e = download_from(DatasetName::Cifar10, tmp.path(), &src, &mut |_| {})
        .unwrap_err()
        .to_string();
    eprintln!("connection refused: {e}");
    assert!(
        e.contains(&format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz"))
            && e.contains("Without network access")
            && e.contains("cifar-10-batches-bin")
            && e.contains("cs.toronto.edu"),
        "{e}"
    );
    assert_eq!(listing(tmp.path()), Vec::<String>::new());
}

/// The CIFAR-10 archive is verified, kept, and its batches unpacked into
/// `<data-dir>/cifar-10-batches-bin/` (no temporary folder left); the loader reads them.
#[test]
fn cifar_archive_is_verified_and_unpacked() {
    let mut tar = tar::Builder::new(Vec::new());
    let batches = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (i, b) in batches.iter().enumerate() {
        let recs = 2 + i;
        let data: Vec<u8> = (0..recs * 3073)
            .map(|j| {
                if j % 3073 == 0 {
                    ((j / 3073) % 10) as u8
                } else {
                    (j % 256) as u8
                }
            })
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{b}"), &data[..])
            .unwrap();
    }
    let archive = gz(&tar.into_inner().unwrap());
    let mut routes = HashMap::new();
    routes.insert(
        "/c/cifar-10-binary.tar.gz".to_string(),
        Reply::Ok(archive.clone()),
    );
    let srv = serve(routes);
    let src = Source {
        mirrors: vec![format!("{}/c/", srv.base)],
        files: vec![RemoteFile {
            name: "cifar-10-binary.tar.gz".into(),
            md5: md5_hex(&archive),
        }],
    };
    let tmp = tempfile::tempdir().unwrap();
    download_from(DatasetName::Cifar10, tmp.path(), &src, &mut |_| {}).unwrap();
    assert_eq!(
        listing(tmp.path()),
        vec![
            "cifar-10-batches-bin".to_string(),
            "cifar-10-binary.tar.gz".to_string()
        ]
    );
    let d = load_cifar10(tmp.path()).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (2 + 3 + 4 + 5 + 6, 7));
    // complete batches: nothing is fetched again
    let rep = download_from(DatasetName::Cifar10, tmp.path(), &src, &mut |_| {}).unwrap();
    assert!(rep.fetched.is_empty());
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
}

/// `ufm train --download` with `UFM_DOWNLOAD_MIRROR` uses the official checksums: generated
/// files fail them, so the command exits 1 with the md5 message and writes nothing.
#[test]
fn cli_download_checks_the_official_md5() {
    let files = mnist_files(4, 2);
    let mut routes = HashMap::new();
    for (name, bytes) in &files {
        routes.insert(format!("/{name}.gz"), Reply::Ok(gz(bytes)));
    }
    let srv = serve(routes);
    let tmp = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("ufm")
        .unwrap()
        .args(["train", "--dataset", "mnist", "--download", "--data-dir"])
        .arg(tmp.path())
        .env("UFM_DOWNLOAD_MIRROR", &srv.base)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected f68b3c2dcbeaaa9fbdd348bbdeb94873") && err.contains("Error:"),
        "{err}"
    );
    assert_eq!(listing(&tmp.path().join("MNIST/raw")), Vec::<String>::new());
}
