//! `nn::download` without the internet: a tiny HTTP/1.1 server on 127.0.0.1 (a thread with
//! `std::net::TcpListener`, at most 64 connections, stops by itself after 60 s) serves generated
//! MNIST IDX files and a CIFAR-10 `.tar.gz`; the downloader is pointed at it through
//! [`Source`]. Checks: good downloads land, verify and load; a wrong checksum, a truncated
//! body or a refused connection is an error naming the folder to fill by hand and leaves no
//! file behind; a server that stalls mid-body or sends more than the file's size limit is cut
//! off within the time limit and leaves nothing; mirrors are tried in order; present files
//! are not fetched again.

use flate2::write::GzEncoder;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ufm::nn::data::{load_cifar10, load_mnist, DatasetName};
use ufm::nn::download::{download_from, md5_file, md5_hex, RemoteFile, Source, Timeouts};

#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    /// announces 1000 more bytes than it sends, then closes
    Truncated(Vec<u8>),
    /// announces the full length, sends the first half, then stays silent for 30 s
    Stall(Vec<u8>),
    /// no `Content-Length`: sends the bytes, then closes (the body ends at the close)
    Unannounced(Vec<u8>),
}

/// Short limits for the tests: 2 s of silence, 20 s per file.
fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        stall: Duration::from_secs(2),
        per_file: Duration::from_secs(20),
    }
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
                Some(Reply::Stall(b)) => {
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .as_bytes(),
                    );
                    let _ = s.write_all(&b[..b.len() / 2]);
                    let _ = s.flush();
                    // hold the connection open in another thread, so the server keeps serving
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(30));
                        drop(s);
                    });
                    continue;
                }
                Some(Reply::Unannounced(b)) => ("200 OK".to_string(), b.clone()),
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
            max_bytes: 2 * z.len() as u64,
        });
        routes.insert(format!("/good/{name}.gz"), Reply::Ok(z));
    }
    let srv = serve(routes);
    let src = Source {
        mirrors: vec![format!("{}/gone/", srv.base), format!("{}/good/", srv.base)],
        files: src_files,
        timeouts: quick(),
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
            max_bytes: 1 << 20,
        }],
        timeouts: quick(),
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
            max_bytes: 1 << 20,
        }],
        timeouts: quick(),
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
            max_bytes: 2 * archive.len() as u64,
        }],
        timeouts: quick(),
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

/// A server that sends half the body and then goes silent is cut off after the stall limit
/// (2 s here), long before it would close; a body longer than the file's limit is refused,
/// whether the server announces it (`Content-Length`) or just keeps sending. Each case is an
/// error that names the limit, and leaves no file and no temporary file.
#[test]
fn stalled_or_oversized_bodies_are_cut_off_and_leave_nothing() {
    let files = mnist_files(40, 2);
    let z = gz(&files[0].1);
    let name = format!("{}.gz", files[0].0);
    let mut routes = HashMap::new();
    routes.insert(format!("/stall/{name}"), Reply::Stall(z.clone()));
    routes.insert(format!("/big/{name}"), Reply::Ok(z.clone()));
    routes.insert(format!("/endless/{name}"), Reply::Unannounced(z.clone()));
    let srv = serve(routes);
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("MNIST/raw");
    let src = |dir: &str, max_bytes: u64| Source {
        mirrors: vec![format!("{}/{dir}/", srv.base)],
        files: vec![RemoteFile {
            name: name.clone(),
            md5: md5_hex(&z),
            max_bytes,
        }],
        timeouts: quick(),
    };
    let t0 = Instant::now();
    let e = download_from(
        DatasetName::Mnist,
        tmp.path(),
        &src("stall", 1 << 20),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    let waited = t0.elapsed();
    eprintln!("stalled body ({waited:?}): {e}");
    assert!(
        e.contains("timed out") && e.contains("nothing was written"),
        "{e}"
    );
    assert!(
        waited < Duration::from_secs(15),
        "cut off after {waited:?}, the stall limit is 2 s"
    );
    assert_eq!(listing(&raw), Vec::<String>::new());
    let limit = z.len() as u64 / 2;
    let e = download_from(
        DatasetName::Mnist,
        tmp.path(),
        &src("big", limit),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!("announces {} bytes", z.len())) && e.contains(&limit.to_string()),
        "{e}"
    );
    assert_eq!(listing(&raw), Vec::<String>::new());
    let e = download_from(
        DatasetName::Mnist,
        tmp.path(),
        &src("endless", limit),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(&format!("more than {limit} bytes")), "{e}");
    assert_eq!(listing(&raw), Vec::<String>::new());
    // within the limit the same unannounced body is accepted
    download_from(
        DatasetName::Mnist,
        tmp.path(),
        &src("endless", z.len() as u64),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(listing(&raw), vec![name.clone()]);
}

/// The official sources allow twice each file's published size.
#[test]
fn official_sources_limit_each_file_to_twice_its_size() {
    let m = Source::official(DatasetName::Mnist);
    let sizes: Vec<u64> = m.files.iter().map(|f| f.max_bytes).collect();
    assert_eq!(
        sizes,
        vec![2 * 9_912_422, 2 * 28_881, 2 * 1_648_877, 2 * 4_542]
    );
    let c = Source::official(DatasetName::Cifar10);
    assert_eq!(c.files[0].max_bytes, 2 * 170_052_171);
    assert_eq!(m.timeouts, Timeouts::default());
    assert!(m.timeouts.stall <= Duration::from_secs(60));
}
