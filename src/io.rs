//! Files: atomic writes, `.npz` export of UFM solutions.

use crate::error::{Error, Result};
use crate::real::Real;
use crate::ufm::UfmProblem;
use ndarray::{Array1, Array2};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary sibling of `path` (same directory, so `rename` is atomic).
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: write a temporary file in the same directory, flush
/// it to disk, then rename over `path`. A crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with a writer callback.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("rename into", path, e)
    })
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
    use ndarray::{Array1, Array2};
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut npz = ndarray_npy::NpzReader::new(f)
        .map_err(|e| Error::format(path, format!("not an .npz file: {e}")))?;
    // f64 arrays, or f32 ones (from `ufm solve --precision f32 --save`) widened exactly.
    let mut get = |name: &str| -> Option<ndarray::ArrayD<f64>> {
        let a: Option<ndarray::ArrayD<f64>> = npz.by_name(name).ok();
        a.or_else(|| {
            let a: ndarray::ArrayD<f32> = npz.by_name(name).ok()?;
            Some(a.mapv(f64::from))
        })
    };
    let two = |a: Option<ndarray::ArrayD<f64>>, name: &str| -> Result<Array2<f64>> {
        a.and_then(|a| a.into_dimensionality().ok()).ok_or_else(|| {
            Error::format(
                path,
                format!("no f32/f64 2-D array `{name}` (as written by `ufm solve --save`)"),
            )
        })
    };
    let w = two(get("W"), "W")?;
    let h = two(get("H"), "H")?;
    let b: Option<Array1<f64>> = get("b").and_then(|a| a.into_dimensionality().ok());
    let labels: Option<ndarray::ArrayD<i64>> = npz.by_name("labels").ok();
    if let Some(l) = labels {
        if l.len() != p.n_samples() || l.iter().zip(p.labels()).any(|(&a, &b)| a != b as i64) {
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
