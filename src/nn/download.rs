//! `ufm train --download`: fetches the official data files over HTTP(S) as torchvision does,
//! and accepts a file only if
//! $$\operatorname{md5}(\text{downloaded bytes})=\text{torchvision's checksum}$$
//! (RFC 1321). Each file is streamed from the first mirror that answers into a temporary file
//! next to its destination (hashing as it goes) and renamed into place only after the check
//! ([`crate::io::write_atomic_with`]), so a failed, truncated or corrupt download never sits
//! under the final name. CIFAR-10's `cifar-10-binary.tar.gz` is then unpacked (gzip + tar)
//! through a temporary folder into `<data-dir>/cifar-10-batches-bin/`.
//!
//! Sources (torchvision's `MNIST.mirrors` / `MNIST.resources` and the CIFAR-10 page of
//! A. Krizhevsky, *Learning Multiple Layers of Features from Tiny Images*, 2009):
//!
//! | data set | files | from |
//! |---|---|---|
//! | `mnist` | the four `*-ubyte.gz` of [`MNIST_FILES`] into `<data-dir>/MNIST/raw/` | [`MNIST_MIRRORS`], in order |
//! | `cifar10`, `cifar10_random` | [`CIFAR10_ARCHIVE`] (md5 [`CIFAR10_MD5`]) into `<data-dir>/` | [`CIFAR10_BASE`] |
//!
//! Every transfer is bounded ([`Timeouts`]): connecting may take 30 s, the server may stay
//! silent for at most 60 s (before the headers or in the middle of the body) and one file may
//! take at most an hour; and the body may be at most [`RemoteFile::max_bytes`] long (twice
//! the official size, [`MNIST_GZ_BYTES`] and [`CIFAR10_BYTES`]): a server that stalls or
//! sends too much is an error, and nothing is left behind.
//!
//! Without network access (or when every mirror fails) the error lists what each URL
//! answered and where to put the files by hand ([`download_instructions`]). The HTTP client is
//! `ureq` on rustls (no system TLS library). [`Source`] replaces the URLs and checksums, for a
//! local mirror (`UFM_DOWNLOAD_MIRROR` in the CLI) or for tests.

use crate::error::{Error, Result};
use crate::nn::data::{download_instructions, DatasetName, MNIST_FILES};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// torchvision's MNIST mirrors, tried in order.
pub const MNIST_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];
/// Where the CIFAR-10 binary archive lives.
pub const CIFAR10_BASE: &str = "https://www.cs.toronto.edu/~kriz/";
/// The CIFAR-10 binary archive.
pub const CIFAR10_ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// md5 of [`CIFAR10_ARCHIVE`].
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Size of [`CIFAR10_ARCHIVE`] in bytes.
pub const CIFAR10_BYTES: u64 = 170_052_171;
/// Sizes of the four MNIST `.gz` files, in the order of [`MNIST_FILES`].
pub const MNIST_GZ_BYTES: [u64; 4] = [9_912_422, 28_881, 1_648_877, 4_542];
/// The batch files inside the archive's `cifar-10-batches-bin/` folder.
pub const CIFAR10_BATCHES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// One file to fetch: its name under the destination folder, its md5 (lower-case hex) and the
/// most bytes accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name (also the last URL component).
    pub name: String,
    /// Expected md5, 32 lower-case hex digits.
    pub md5: String,
    /// A body longer than this is refused (announced by `Content-Length` or counted while
    /// reading); the official files allow twice their size.
    pub max_bytes: u64,
}

/// Time limits of every download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the connection (TCP and TLS).
    pub connect: Duration,
    /// The longest the server may stay silent: waiting for the response headers, and each
    /// read of the body.
    pub stall: Duration,
    /// One file, from connecting to the last byte.
    pub per_file: Duration,
}

impl Default for Timeouts {
    /// 30 s to connect, 60 s of silence, one hour per file.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            stall: Duration::from_secs(60),
            per_file: Duration::from_secs(3600),
        }
    }
}

/// Where a data set's files come from: base URLs tried in order (each ends with `/`), the
/// files with their checksums and size limits, and the time limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Base URLs; a file's URL is `base + name`.
    pub mirrors: Vec<String>,
    /// Files to fetch.
    pub files: Vec<RemoteFile>,
    /// Time limits.
    pub timeouts: Timeouts,
}

impl Source {
    /// The official source of `name` (torchvision's URLs and checksums).
    pub fn official(name: DatasetName) -> Source {
        match name {
            DatasetName::Mnist => Source {
                mirrors: MNIST_MIRRORS.iter().map(|s| s.to_string()).collect(),
                files: MNIST_FILES
                    .iter()
                    .zip(MNIST_GZ_BYTES)
                    .map(|((f, md5), bytes)| RemoteFile {
                        name: format!("{f}.gz"),
                        md5: md5.to_string(),
                        max_bytes: 2 * bytes,
                    })
                    .collect(),
                timeouts: Timeouts::default(),
            },
            DatasetName::Cifar10 | DatasetName::Cifar10Random => Source {
                mirrors: vec![CIFAR10_BASE.to_string()],
                files: vec![RemoteFile {
                    name: CIFAR10_ARCHIVE.into(),
                    md5: CIFAR10_MD5.into(),
                    max_bytes: 2 * CIFAR10_BYTES,
                }],
                timeouts: Timeouts::default(),
            },
        }
    }

    /// The official files and checksums, fetched from `base` instead (a local mirror holding
    /// the same file names).
    pub fn with_mirror(mut self, base: &str) -> Source {
        let mut b = base.to_string();
        if !b.ends_with('/') {
            b.push('/');
        }
        self.mirrors = vec![b];
        self
    }
}

/// What [`download`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadReport {
    /// Files fetched and verified (and, for CIFAR-10, the batches unpacked).
    pub fetched: Vec<PathBuf>,
    /// Files already present (verified by md5 where the archive form is present).
    pub present: Vec<PathBuf>,
}

/// md5 of a byte string as 32 lower-case hex digits.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex(&md5::Md5::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// md5 of a file (streamed).
pub fn md5_file(path: &Path) -> Result<String> {
    use md5::Digest;
    let mut f = fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn agent(t: &Timeouts) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(t.connect))
        .timeout_recv_response(Some(t.stall))
        .timeout_per_read(Some(t.stall))
        .timeout_per_call(Some(t.per_file))
        .build()
        .into()
}

fn too_long(max: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the server sent more than {max} bytes, the limit for this file; refused"),
    )
}

/// Streams `url` into `out` (at most `max_bytes` bytes), returning the md5 of the bytes written.
fn fetch_into(
    agent: &ureq::Agent,
    url: &str,
    max_bytes: u64,
    t: &Timeouts,
    out: &mut fs::File,
) -> std::io::Result<String> {
    use md5::Digest;
    let timed = |e: std::io::Error, what: &str| {
        if e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("timeout") {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "{what} timed out ({e}; limits: connect {:?}, silence {:?}, whole file {:?})",
                    t.connect, t.stall, t.per_file
                ),
            )
        } else {
            e
        }
    };
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| timed(e.into_io(), "the request"))?;
    if let Some(len) = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > max_bytes {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the server announces {len} bytes, more than the limit of {max_bytes} for this file; refused"),
            ));
        }
    }
    let mut body = resp.into_body().into_reader();
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| timed(e, "reading the body"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return Err(too_long(max_bytes));
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok(hex(&h.finalize()))
}

/// Fetches `file` from the first of `mirrors` that delivers it with the right md5, into
/// `dest` (atomically; nothing is left under `dest` or as a temporary file on failure).
/// `how_to` is appended to the error, which lists what each URL answered.
pub fn fetch_verified(
    mirrors: &[String],
    file: &RemoteFile,
    timeouts: &Timeouts,
    dest: &Path,
    how_to: &str,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let agent = agent(timeouts);
    let mut failures = Vec::new();
    for base in mirrors {
        let url = format!("{base}{}", file.name);
        log(&format!("downloading {url}"));
        let res = crate::io::write_atomic_with(dest, |f| {
            let got = fetch_into(&agent, &url, file.max_bytes, timeouts, f)?;
            if got == file.md5 {
                Ok(())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("md5 {got}, expected {} (corrupt or changed file)", file.md5),
                ))
            }
        });
        match res {
            Ok(()) => {
                log(&format!("verified md5 {} -> {}", file.md5, dest.display()));
                return Ok(());
            }
            Err(Error::Io { source, .. }) => failures.push(format!("{url}: {source}")),
            Err(e) => return Err(e),
        }
    }
    // (Error::Data, not Error::Io: the binary prints an Io error's source a second time)
    Err(Error::Data(format!(
        "cannot download {}: nothing was written there; tried\n  {}\nWithout network access, {how_to}",
        dest.display(),
        failures.join("\n  ")
    )))
}

/// Downloads the official files of `name` into `data_dir` (see the module table), skipping
/// files that are already there and intact; `mirror` replaces the official URLs by one base
/// URL holding the same file names. `log` receives progress lines.
pub fn download(
    name: DatasetName,
    data_dir: &Path,
    mirror: Option<&str>,
    log: &mut dyn FnMut(&str),
) -> Result<DownloadReport> {
    let src = Source::official(name);
    let src = match mirror {
        Some(m) => src.with_mirror(m),
        None => src,
    };
    download_from(name, data_dir, &src, log)
}

/// [`download`] from an explicit [`Source`] (its URLs and checksums).
pub fn download_from(
    name: DatasetName,
    data_dir: &Path,
    src: &Source,
    log: &mut dyn FnMut(&str),
) -> Result<DownloadReport> {
    let how_to = download_instructions(name, data_dir);
    let mut rep = DownloadReport::default();
    match name {
        DatasetName::Mnist => {
            let dir = data_dir.join("MNIST").join("raw");
            for f in &src.files {
                let dest = dir.join(&f.name);
                let plain = dir.join(f.name.trim_end_matches(".gz"));
                if dest.is_file() {
                    if md5_file(&dest)? == f.md5 {
                        rep.present.push(dest);
                        continue;
                    }
                    log(&format!(
                        "{} fails its md5 check: downloading it again",
                        dest.display()
                    ));
                } else if plain.is_file() && plain != dest {
                    // an uncompressed copy (torchvision extracts them); the loader reads it
                    rep.present.push(plain);
                    continue;
                }
                fetch_verified(&src.mirrors, f, &src.timeouts, &dest, &how_to, log)?;
                rep.fetched.push(dest);
            }
        }
        DatasetName::Cifar10 | DatasetName::Cifar10Random => {
            let target = data_dir.join("cifar-10-batches-bin");
            let complete = CIFAR10_BATCHES.iter().all(|b| {
                fs::metadata(target.join(b)).is_ok_and(|m| m.len() > 0 && m.len() % 3073 == 0)
            });
            if complete {
                rep.present.push(target);
                return Ok(rep);
            }
            let f = src
                .files
                .first()
                .ok_or_else(|| Error::param("download", "the CIFAR-10 source lists no archive"))?;
            let archive = data_dir.join(&f.name);
            if archive.is_file() && md5_file(&archive)? == f.md5 {
                rep.present.push(archive.clone());
            } else {
                fetch_verified(&src.mirrors, f, &src.timeouts, &archive, &how_to, log)?;
                rep.fetched.push(archive.clone());
            }
            log(&format!("unpacking {}", archive.display()));
            rep.fetched.extend(unpack_cifar(&archive, data_dir)?);
        }
    }
    Ok(rep)
}

/// Unpacks the `cifar-10-batches-bin/*.bin` members of a verified archive into
/// `<data_dir>/cifar-10-batches-bin/`: everything goes to a temporary folder first, then each
/// batch is renamed into place; the temporary folder is removed in every case.
fn unpack_cifar(archive: &Path, data_dir: &Path) -> Result<Vec<PathBuf>> {
    // folders of unpacks that were killed half-way
    crate::io::remove_stale_temps(data_dir, ".cifar-unpack-");
    let tmp = data_dir.join(format!(".cifar-unpack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let res = (|| {
        fs::create_dir(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
        let f = fs::File::open(archive).map_err(|e| Error::io("read", archive, e))?;
        // `unpack` refuses members that would land outside `tmp` (absolute paths, `..`)
        tar::Archive::new(flate2::read::MultiGzDecoder::new(f))
            .unpack(&tmp)
            .map_err(|e| {
                Error::format(
                    archive,
                    format!("not a readable .tar.gz ({e}); delete it and download again"),
                )
            })?;
        let from = tmp.join("cifar-10-batches-bin");
        let target = data_dir.join("cifar-10-batches-bin");
        fs::create_dir_all(&target).map_err(|e| Error::io("create directory", &target, e))?;
        let mut moved = Vec::new();
        for b in CIFAR10_BATCHES {
            let p = from.join(b);
            if !p.is_file() {
                return Err(Error::format(
                    archive,
                    format!("has no cifar-10-batches-bin/{b}"),
                ));
            }
            let dest = target.join(b);
            fs::rename(&p, &dest).map_err(|e| Error::io("rename into", &dest, e))?;
            moved.push(dest);
        }
        Ok(moved)
    })();
    let _ = fs::remove_dir_all(&tmp);
    res
}
