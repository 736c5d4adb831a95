//! Checkpoints: a network's `state_dict` as safetensors with PyTorch's names and dtypes
//! (`float32` parameters and running statistics, `int64` scalar `num_batches_tracked`), so
//! `model.load_state_dict(safetensors.torch.load_file(path))` works on the original model.
//! Extra tensors (optimizer state) and string metadata can ride along.

use crate::error::{Error, Result};
use crate::nn::layers::{Module, TensorMut};
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

fn f32_bytes(a: &ArrayD<f32>) -> Vec<u8> {
    a.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serialises the state of `net` (+ `extra` tensors, + `metadata`) to safetensors bytes.
pub fn to_bytes(
    net: &mut dyn Module<f32>,
    extra: &[(String, ArrayD<f32>)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    net.visit("", &mut |name, t| match t {
        TensorMut::Param(p) => owned.push((
            name.into(),
            Dtype::F32,
            p.value.shape().to_vec(),
            f32_bytes(&p.value),
        )),
        TensorMut::Buffer(b) => {
            owned.push((name.into(), Dtype::F32, b.shape().to_vec(), f32_bytes(b)))
        }
        TensorMut::Count(c) => {
            owned.push((name.into(), Dtype::I64, vec![], c.to_le_bytes().to_vec()))
        }
    });
    for (n, a) in extra {
        owned.push((n.clone(), Dtype::F32, a.shape().to_vec(), f32_bytes(a)));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::numerical("safetensors", e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::numerical("safetensors serialize", e.to_string()))
}

/// Writes a checkpoint atomically.
pub fn save(
    path: &Path,
    net: &mut dyn Module<f32>,
    extra: &[(String, ArrayD<f32>)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    crate::io::write_atomic(path, &to_bytes(net, extra, metadata)?)
}

/// A parsed checkpoint file.
pub struct Checkpoint {
    bytes: Vec<u8>,
    path: std::path::PathBuf,
}

impl Checkpoint {
    /// Reads and validates the safetensors header of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::format(
                path,
                format!("not a readable safetensors checkpoint ({e:?}); it may be incomplete"),
            )
        })?;
        Ok(Checkpoint {
            bytes,
            path: path.to_path_buf(),
        })
    }

    /// String metadata.
    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    /// A float32 tensor by name: `Ok(None)` when the file has no tensor of that name, an error
    /// naming the tensor and the file when it has another dtype.
    pub fn tensor_f32(&self, name: &str) -> Result<Option<ArrayD<f32>>> {
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::format(&self.path, format!("{e:?}")))?;
        let Ok(t) = st.tensor(name) else {
            return Ok(None);
        };
        if t.dtype() != Dtype::F32 {
            return Err(Error::format(
                &self.path,
                format!(
                    "tensor `{name}` is {:?} {:?}, expected F32",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(self.tensor(name))
    }

    /// A float32 tensor by name (`None` when absent or of another dtype; see
    /// [`Checkpoint::tensor_f32`] to tell the two apart).
    pub fn tensor(&self, name: &str) -> Option<ArrayD<f32>> {
        let st = SafeTensors::deserialize(&self.bytes).ok()?;
        let t = st.tensor(name).ok()?;
        if t.dtype() != Dtype::F32 {
            return None;
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        ArrayD::from_shape_vec(IxDyn(t.shape()), v).ok()
    }

    /// Loads every parameter and buffer of `net`; errors name the first tensor that is
    /// missing or has another shape (a checkpoint of another model).
    pub fn load_into(&self, net: &mut dyn Module<f32>) -> Result<()> {
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::format(&self.path, format!("{e:?}")))?;
        let mut err: Option<Error> = None;
        let path = &self.path;
        net.visit("", &mut |name, t| {
            if err.is_some() {
                return;
            }
            let Ok(v) = st.tensor(name) else {
                err = Some(Error::format(path, format!("tensor `{name}` is missing: the checkpoint is from another model (check --model/--width/--depth/--fixdim/--sota)")));
                return;
            };
            let (want_shape, want_dtype) = match &t {
                TensorMut::Param(p) => (p.value.shape().to_vec(), Dtype::F32),
                TensorMut::Buffer(b) => (b.shape().to_vec(), Dtype::F32),
                TensorMut::Count(_) => (vec![], Dtype::I64),
            };
            if v.shape() != want_shape.as_slice() || v.dtype() != want_dtype {
                err = Some(Error::format(
                    path,
                    format!(
                        "tensor `{name}` is {:?} {:?} but the model expects {:?} {:?}: the checkpoint is from another model",
                        v.dtype(),
                        v.shape(),
                        want_dtype,
                        want_shape
                    ),
                ));
                return;
            }
            let d = v.data();
            match t {
                TensorMut::Param(p) => fill(&mut p.value, d),
                TensorMut::Buffer(b) => fill(b, d),
                TensorMut::Count(c) => *c = i64::from_le_bytes(d[..8].try_into().expect("8 bytes")),
            }
        });
        err.map_or(Ok(()), Err)
    }
}

fn fill(a: &mut ArrayD<f32>, d: &[u8]) {
    for (v, c) in a.iter_mut().zip(d.chunks_exact(4)) {
        *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}
