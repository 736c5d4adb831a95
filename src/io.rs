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
