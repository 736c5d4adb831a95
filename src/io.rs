//! Files: atomic writes, `.npz` export of UFM solutions.

use crate::error::{Error, Result};
use crate::real::Real;
use crate::ufm::UfmProblem;
use ndarray::{Array1, Array2};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How old a temporary file of a *live* process id must be before [`remove_stale_temps`]
/// removes it anyway (the id may have been reused by an unrelated process): one day.
pub const STALE_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A 64-bit value that differs between calls, threads and processes (splitmix64 of the
/// clock, the process id, a counter and a stack address). Not secret: temporary files are
/// opened with `O_EXCL` and a collision only costs a retry.
fn unique_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let mut z = nanos
        ^ (std::process::id() as u64).rotate_left(32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (&local as *const u8 as u64).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The prefix of every temporary sibling of `path`: `.NAME.tmp-`.
fn tmp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    format!(".{name}.tmp-")
}

/// Creates a new, empty temporary sibling `.NAME.tmp-PID-RANDOM` of `path` (same directory, so
/// `rename` is atomic) with `O_CREAT | O_EXCL`: it never opens an existing file and never
/// follows a symbolic link planted under that name; a name that exists is retried with
/// another random part.
fn create_tmp(path: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let prefix = tmp_prefix(path);
    for _ in 0..64 {
        let tmp = path.with_file_name(format!(
            "{prefix}{}-{:016x}",
            std::process::id(),
            unique_u64()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary file name after 64 tries",
    ))
}

/// Whether process `pid` exists (on Unix: `kill(pid, 0)`; elsewhere assumed alive, so only the
/// age rule of [`remove_stale_temps`] applies).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        if pid == 0 || pid > i32::MAX as u32 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// The process id in a temporary name `PREFIX PID` or `PREFIX PID-XXXXXXXXXXXXXXXX` (16 hex
/// digits), or `None` when `name` does not match that exact pattern.
fn temp_owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, tail) = match rest.split_once('-') {
        Some((p, t)) => (p, Some(t)),
        None => (rest, None),
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(t) = tail {
        if t.len() != 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
    }
    pid.parse().ok()
}

/// Removes leftovers named exactly `PREFIX PID[-16 hex digits]` in `dir` (temporary files of
/// [`write_atomic`] are `.NAME.tmp-…`) whose process is gone, or that are older than
/// [`STALE_AGE`]; entries of this process are kept (another thread may be writing them).
/// Symbolic links are removed, never followed. Returns the paths removed; errors are ignored
/// (cleaning up is best effort).
pub fn remove_stale_temps(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return removed;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| temp_owner(n, prefix)) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > STALE_AGE);
        if process_alive(pid) && !old {
            continue;
        }
        let p = e.path();
        let ok = if meta.is_dir() {
            fs::remove_dir_all(&p).is_ok()
        } else {
            fs::remove_file(&p).is_ok()
        };
        if ok {
            removed.push(p);
        }
    }
    removed
}

/// Writes `bytes` to `path` atomically: write a temporary file in the same directory, flush
/// it to disk, then rename over `path`. A crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with a writer callback.
///
/// The temporary file is `.NAME.tmp-PID-RANDOM` next to `path`, created exclusively
/// (`O_EXCL`: an existing file or a planted symbolic link of that name is never opened);
/// leftovers `.NAME.tmp-*` of processes that are gone (killed during a write) are removed
/// first ([`remove_stale_temps`]).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    remove_stale_temps(dir.unwrap_or(Path::new(".")), &tmp_prefix(path));
    let (tmp, mut f) =
        create_tmp(path).map_err(|e| Error::io("create a temporary file for", path, e))?;
    let result = (|| {
        write(&mut f)?;
        f.sync_all()
    })();
    drop(f);
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("rename into", path, e)
    })
}

/// An exclusive lock on a directory, held until dropped (or the process ends, however it
/// ends): `flock(LOCK_EX | LOCK_NB)` on `DIR/.ufm.lock`, which also records the holder's
/// process id for the error message. The kernel releases the lock when the process dies, so a
/// killed run never leaves a stale lock. (On non-Unix systems no lock is taken.)
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
    path: PathBuf,
}

/// Name of the lock file [`DirLock`] creates in the locked directory.
pub const LOCK_FILE: &str = ".ufm.lock";

impl DirLock {
    /// Locks `dir` (which must exist) or fails at once, without waiting, when another process
    /// holds it; `holder` names the kind of process in the message (e.g. "`ufm train`") and
    /// `hint` says what to do.
    pub fn acquire(dir: &Path, holder: &str, hint: &str) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut oo = fs::OpenOptions::new();
        oo.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            oo.custom_flags(libc::O_NOFOLLOW);
        }
        let mut f = oo
            .open(&path)
            .map_err(|e| Error::io("open the lock file", &path, e))?;
        #[cfg(unix)]
        {
            use std::io::{Read, Seek};
            use std::os::unix::io::AsRawFd;
            // A lock last taken by this very process can still be held for a moment after
            // it was dropped: a child being spawned by another thread inherits the open
            // descriptor between fork and exec. Such a lock is retried for up to 2 s; one held
            // by another process fails at once.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let (r, err) = loop {
                // SAFETY: a valid open descriptor; LOCK_NB makes the call return at once.
                let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                let err = std::io::Error::last_os_error();
                let busy = r != 0 && err.raw_os_error() == Some(libc::EWOULDBLOCK);
                if !busy || std::time::Instant::now() >= deadline {
                    break (r, err);
                }
                let mut s = String::new();
                let _ = f.seek(std::io::SeekFrom::Start(0));
                let _ = f.read_to_string(&mut s);
                if s.trim().parse::<u32>().ok() != Some(std::process::id()) {
                    break (r, err);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            if r != 0 {
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let mut s = String::new();
                    let _ = f.seek(std::io::SeekFrom::Start(0));
                    let _ = f.read_to_string(&mut s);
                    let who = s
                        .trim()
                        .parse::<u32>()
                        .map(|p| format!(" (pid {p})"))
                        .unwrap_or_default();
                    return Err(Error::io(
                        "lock",
                        dir,
                        std::io::Error::new(
                            std::io::ErrorKind::WouldBlock,
                            format!("another {holder}{who} is using this directory; {hint}"),
                        ),
                    ));
                }
                return Err(Error::io("lock", &path, err));
            }
            f.set_len(0).map_err(|e| Error::io("write", &path, e))?;
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| Error::io("write", &path, e))?;
            f.write_all(format!("{}\n", std::process::id()).as_bytes())
                .map_err(|e| Error::io("write", &path, e))?;
        }
        Ok(DirLock { _file: f, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Saves a UFM point as `.npz` with arrays `W` ($K\times d$), `H` ($d\times N$, the paper's
/// orientation), `b` ($K$; zeros without bias) and `labels` ($N$, int64), in the point's
/// precision. numpy reads it with `np.load`.
pub fn save_ufm_npz<T: Real + ndarray_npy::WritableElement>(
    path: &Path,
    p: &UfmProblem,
    x: &[T],
) -> Result<()> {
    p.check_len("point", x)?;
    let (w, ht, b) = p.split(x);
    let h: Array2<T> = ht.t().to_owned();
    let b: Array1<T> = b.map_or_else(|| Array1::zeros(p.n_classes()), |b| b.to_owned());
    let labels: Array1<i64> = p.labels().iter().map(|&y| y as i64).collect();
    write_atomic_with(path, |f| {
        let mut npz = ndarray_npy::NpzWriter::new(f);
        let err = |e: ndarray_npy::WriteNpzError| std::io::Error::other(e.to_string());
        npz.add_array("W", &w.to_owned()).map_err(err)?;
        npz.add_array("H", &h).map_err(err)?;
        npz.add_array("b", &b).map_err(err)?;
        npz.add_array("labels", &labels).map_err(err)?;
        npz.finish().map_err(err)?;
        Ok(())
    })
}

/// Loads a point saved by [`save_ufm_npz`] (`ufm solve --save`) (arrays `W` $K\times d$, `H` $d\times N$, `b`) as a
/// flat parameter vector of `p`, checking every shape against `p`.
pub fn load_ufm_npz(path: &Path, p: &UfmProblem) -> Result<Vec<f64>> {
    use crate::features::{npz_array, Dtype};
    // Checked reader: sizes, names and CRC-32 of every member (crate::npy); a member that
    // is present but unreadable is an error, never silently skipped.
    let npz = crate::npy::Npz::open(path)?;
    // f64 arrays, or f32 ones (from `ufm solve --precision f32 --save`) widened exactly.
    let get = |name: &str| -> Result<Option<crate::features::NamedArray>> {
        if npz.member(name).is_none() {
            return Ok(None);
        }
        let a = npz_array(&npz, name, false)?;
        if !matches!(a.dtype, Dtype::F32 | Dtype::F64) {
            return Err(Error::format(
                path,
                format!(
                    "`{name}` is {} but must be float32 or float64",
                    a.dtype.name()
                ),
            ));
        }
        Ok(Some(a))
    };
    let two = |name: &str| -> Result<Array2<f64>> {
        match get(name)? {
            Some(a) if a.shape.len() == 2 => {
                Ok(Array2::from_shape_vec((a.shape[0], a.shape[1]), a.values).expect("shape"))
            }
            _ => Err(Error::format(
                path,
                format!(
                    "no f32/f64 2-D array `{name}` (as written by `ufm solve --save`); the file holds {:?}",
                    npz.names()
                ),
            )),
        }
    };
    let w = two("W")?;
    let h = two("H")?;
    let b: Option<Array1<f64>> = match get("b")? {
        Some(a) if a.shape.len() == 1 => Some(Array1::from(a.values)),
        Some(a) => {
            return Err(Error::format(
                path,
                format!("`b` has shape {:?} but must be 1-D", a.shape),
            ))
        }
        None => None,
    };
    if b.is_none() {
        if let Some(n) = npz.names().iter().find(|n| *n == "B" || *n == "bias") {
            return Err(Error::format(
                path,
                format!("no bias `b`, but the file holds `{n}` (a corrupt or mistyped name); the file holds {:?}", npz.names()),
            ));
        }
    }
    if npz.member("labels").is_some() {
        let l = npz_array(&npz, "labels", false)?;
        if l.values.len() != p.n_samples()
            || l.values
                .iter()
                .zip(p.labels())
                .any(|(&a, &b)| a != b as f64)
        {
            return Err(Error::format(
                path,
                "its `labels` differ from the problem's (class sizes); pass the --classes/--per-class/--class-sizes the point was solved with",
            ));
        }
    }
    let (k, d, n) = (p.n_classes(), p.feature_dim(), p.n_samples());
    if w.dim() != (k, d) || h.dim() != (d, n) {
        return Err(Error::format(
            path,
            format!(
                "W is {:?} and H is {:?}, but the problem flags give W {k}x{d}, H {d}x{n}; \
                 pass the --classes/--per-class/--dim the point was solved with",
                w.dim(),
                h.dim()
            ),
        ));
    }
    let x = p.join(w.view(), h.t(), b.as_ref().map(|b| b.view()))?;
    if !crate::real::all_finite(&x) {
        return Err(Error::NonFinite {
            what: format!("the arrays in {}", path.display()),
        });
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A pid above Linux's largest possible pid_max (2^22), so never a live process.
    const DEAD_PID: u32 = 99_999_999;

    /// The old temporary name `.NAME.tmp-PID` was predictable and opened without `O_EXCL`:
    /// a symbolic link planted there redirected the write. Now a planted link is left alone
    /// (its target untouched), and a link at the final name is replaced, not written through.
    #[cfg(unix)]
    #[test]
    fn planted_symlinks_are_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = dir.path().join("out.txt");
        let old_name = dir
            .path()
            .join(format!(".out.txt.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&p).unwrap(), b"new");
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_atomic(&link, b"other").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // two temporary files of the same target never share a name
        let (a, _fa) = create_tmp(&p).unwrap();
        let (b, _fb) = create_tmp(&p).unwrap();
        assert_ne!(a, b);
        let n = a.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_owner(n, ".out.txt.tmp-"), Some(std::process::id()));
    }

    /// Leftovers of dead processes matching `.NAME.tmp-PID[-16 hex]` are removed when NAME is
    /// written again; other names, live processes' files and this process's are kept.
    #[test]
    fn stale_temps_of_dead_processes_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let me = std::process::id();
        let stale = [
            format!(".out.txt.tmp-{DEAD_PID}"),
            format!(".out.txt.tmp-{DEAD_PID}-0123456789abcdef"),
        ];
        let kept = [
            format!(".out.txt.tmp-{me}-0123456789abcdef"),
            format!(".out.txt.tmp-{DEAD_PID}-xyz"),
            format!(".out.txt.tmp-{DEAD_PID}-0123"),
            ".out.txt.tmp-abc".to_string(),
            format!(".other.txt.tmp-{DEAD_PID}"),
            format!("out.txt.tmp-{DEAD_PID}"),
        ];
        for n in stale.iter().chain(&kept) {
            fs::write(d.join(n), b"x").unwrap();
        }
        write_atomic(&d.join("out.txt"), b"ok").unwrap();
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want: Vec<String> = kept.to_vec();
        want.push("out.txt".into());
        want.sort();
        assert_eq!(left, want);
    }

    /// A second lock on a locked directory fails at once with the holder's pid and the hint;
    /// after the first is dropped the directory can be locked again.
    #[cfg(unix)]
    /// Dropping a lock and taking it again in the same process succeeds even while other
    /// threads spawn child processes, which inherit the lock's descriptor between fork and
    /// exec (a `cargo test` race seen once in `nn_train`).
    #[cfg(unix)]
    #[test]
    fn dir_lock_can_be_retaken_while_other_threads_spawn_processes() {
        let dir = tempfile::tempdir().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spawner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::process::Command::new("true").status();
                }
            })
        };
        for _ in 0..300 {
            let lock = DirLock::acquire(dir.path(), "`test`", "try later").unwrap();
            drop(lock);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spawner.join().unwrap();
    }

    #[test]
    fn dir_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path(), "`test`", "try later").unwrap();
        let e = DirLock::acquire(dir.path(), "`test`", "try later")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("try later"),
            "{e}"
        );
        assert_eq!(a.path(), dir.path().join(LOCK_FILE));
        drop(a);
        DirLock::acquire(dir.path(), "`test`", "try later").unwrap();
    }

    #[test]
    fn npz_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sol.npz");
        let p = crate::ufm::UfmConfig::balanced(3, 2, 4).build().unwrap();
        let x: Vec<f64> = p.random_point(1, 1.0).unwrap();
        save_ufm_npz(&path, &p, &x).unwrap();
        let mut npz = ndarray_npy::NpzReader::new(fs::File::open(&path).unwrap()).unwrap();
        let h: Array2<f64> = npz.by_name("H").unwrap();
        assert_eq!(h.dim(), (4, 6));
        let (_, ht, _) = p.split(&x);
        assert_eq!(h.t(), ht);
        assert_eq!(load_ufm_npz(&path, &p).unwrap(), x);
        let other = crate::ufm::UfmConfig::balanced(3, 2, 5).build().unwrap();
        assert!(load_ufm_npz(&path, &other)
            .unwrap_err()
            .to_string()
            .contains("--dim"));
    }
}
