//! Networks of the original code, as a feature map $h=\phi_\Theta(x)\in\mathbb R^d$ followed
//! by a linear classifier $z=Wh+b$ (`fc`):
//!
//! | `--model` | body $\phi_\Theta$ | $d$ |
//! |---|---|---|
//! | `mlp` | `depth` × [Linear, BatchNorm1d, ReLU] of width `width` on the flattened 3×32×32 input | `width` |
//! | `resnet18` | torchvision ResNet-18 (ImageNet stem 7×7/2 + max pool; `--sota`: 3×3/1 stem, no pool) | 512 (`--fixdim d`: d) |
//! | `resnet18-adapt` | CIFAR ResNet-18 with channels $k,2k,4k,8k$ (`--width k`) | $8k$ |
//!
//! `--etf-classifier` freezes $W$ to the simplex ETF $\sqrt{\frac K{K-1}}(I_K-\frac1K\mathbf 1\mathbf 1^\top)$
//! embedded in the first $K$ coordinates (bias stays trainable), as the original `--ETF_fc`.
//! The features returned are the **raw** $h$ (the original also returns `F.normalize(h)`,
//! which only its broken `--sep_decay` path uses).

pub mod mlp;
pub mod resnet;

pub use mlp::Mlp;
pub use resnet::{ResNet, ResNetSpec, Stem};

use super::layers::{Linear, Module, TensorMut};
use crate::error::{Error, Result};
use crate::real::Real;
use crate::ufm::{simplex_etf, EtfEmbedding};
use ndarray::{Array2, Array4, ArrayView1, ArrayView2, Ix1, Ix2};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Architecture names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// `MLP(hidden=width, depth)`.
    Mlp,
    /// torchvision-style `resnet18`.
    Resnet18,
    /// `ResNet18_adapt(width)`.
    Resnet18Adapt,
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mlp" => Ok(Arch::Mlp),
            "resnet18" => Ok(Arch::Resnet18),
            "resnet18-adapt" => Ok(Arch::Resnet18Adapt),
            _ => Err(Error::param(
                "model",
                format!("unknown model `{s}`; use mlp, resnet18 or resnet18-adapt"),
            )),
        }
    }
}

/// Everything that determines a network's shape and initialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// MLP hidden width / `ResNet18_adapt` channel multiplier $k$.
    pub width: usize,
    /// MLP depth (number of hidden layers).
    pub depth: usize,
    /// Number of classes $K$.
    pub n_classes: usize,
    /// Whether `fc` has a bias.
    pub bias: bool,
    /// Freeze `fc.weight` to a simplex ETF.
    pub etf_classifier: bool,
    /// Feature dimension of `resnet18`'s last block (0 = unchanged, 512).
    pub fixdim: usize,
    /// CIFAR stem for `resnet18`.
    pub sota: bool,
}

impl ModelConfig {
    /// Checks option combinations.
    pub fn validate(&self) -> Result<()> {
        if self.n_classes < 2 {
            return Err(Error::param("classes", "need at least 2 classes"));
        }
        if self.arch != Arch::Resnet18 && self.fixdim > 0 {
            return Err(Error::param(
                "fixdim",
                "only resnet18 supports --fixdim (as the original)",
            ));
        }
        if matches!(self.arch, Arch::Mlp | Arch::Resnet18Adapt) && (self.width == 0) {
            return Err(Error::param("width", "must be positive"));
        }
        if self.arch == Arch::Mlp && self.depth == 0 {
            return Err(Error::param("depth", "must be positive"));
        }
        // Sizes come from flags and from config.json files: check them before any allocation.
        let flag = match self.arch {
            Arch::Mlp => "width",
            Arch::Resnet18 if self.fixdim > 0 => "fixdim",
            Arch::Resnet18 => "classes",
            Arch::Resnet18Adapt => "width",
        };
        let what = format!(
            "a {:?} with width {}, depth {}, fixdim {} and {} classes",
            self.arch, self.width, self.depth, self.fixdim, self.n_classes
        );
        let n = self.n_params();
        crate::limits::check_memory(
            flag,
            &format!(
                "{what} ({} parameters, 8 bytes each for value and gradient)",
                n.map_or("more than 2^64".into(), |n| n.to_string())
            ),
            n.and_then(|n| n.checked_mul(8)),
        )
    }

    /// The number of parameter scalars of the network (trainable or frozen, running statistics
    /// not included), computed with checked arithmetic from the configuration alone: `None`
    /// when it overflows 64 bits. [`ModelConfig::validate`] refuses configurations whose
    /// parameters (value and gradient in f32, 8 bytes each) do not fit in memory.
    pub fn n_params(&self) -> Option<u64> {
        let m = |a: u64, b: u64| a.checked_mul(b);
        let u = |v: usize| u64::try_from(v).ok();
        let k = u(self.n_classes)?;
        let (body, d) = match self.arch {
            Arch::Mlp => {
                let w = u(self.width)?;
                let first = m(3 * 32 * 32, w)?.checked_add(m(3, w)?)?;
                let more = match u(self.depth)?.checked_sub(1)? {
                    0 => 0,
                    layers => m(layers, m(w, w)?.checked_add(m(3, w)?)?)?,
                };
                (first.checked_add(more)?, w)
            }
            Arch::Resnet18 => (
                resnet_params(
                    3,
                    if self.sota { 3 } else { 7 },
                    [64, 128, 256, 512],
                    self.fixdim,
                )?,
                if self.fixdim > 0 {
                    u(self.fixdim)?
                } else {
                    512
                },
            ),
            Arch::Resnet18Adapt => {
                let w = u(self.width)?;
                let widths = [w, m(w, 2)?, m(w, 4)?, m(w, 8)?];
                (resnet_params(3, 3, widths, 0)?, widths[3])
            }
        };
        let fc = m(k, d)?.checked_add(if self.bias { k } else { 0 })?;
        body.checked_add(fc)
    }
}

/// Parameters of a basic-block ResNet-18 body (as [`ResNet::new`] builds it): stem convolution
/// `stem_k`×`stem_k` + BN, then four stages of two blocks (3×3 convolutions + BN, a 1×1
/// projection + BN where the shape changes), the last block ending in `fixdim` channels when
/// `fixdim > 0`.
fn resnet_params(c_in: u64, stem_k: u64, widths: [u64; 4], fixdim: usize) -> Option<u64> {
    let m = |a: u64, b: u64| a.checked_mul(b);
    let mut n = m(m(c_in, widths[0])?, stem_k * stem_k)?.checked_add(m(2, widths[0])?)?;
    let mut c = widths[0];
    for (s, &planes) in widths.iter().enumerate() {
        for b in 0..2 {
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let out = if s == 3 && b == 1 && fixdim > 0 {
                u64::try_from(fixdim).ok()?
            } else {
                planes
            };
            n = n
                .checked_add(m(m(c, planes)?, 9)?)?
                .checked_add(m(2, planes)?)?
                .checked_add(m(m(planes, out)?, 9)?)?
                .checked_add(m(2, out)?)?;
            if stride != 1 || c != out {
                n = n.checked_add(m(c, out)?)?.checked_add(m(2, out)?)?;
            }
            c = out;
        }
    }
    Some(n)
}

/// The body of a network.
#[derive(Clone, Debug)]
pub enum Body<T> {
    /// MLP.
    Mlp(Mlp<T>),
    /// Any ResNet.
    ResNet(Box<ResNet<T>>),
}

/// Features and logits of a batch.
#[derive(Clone, Debug)]
pub struct Output<T> {
    /// Raw penultimate features $h$, `B × d`.
    pub features: Array2<T>,
    /// Logits $Wh+b$, `B × K`.
    pub logits: Array2<T>,
}

/// A network: body + classifier `fc`.
#[derive(Clone, Debug)]
pub struct Net<T> {
    /// The feature map.
    pub body: Body<T>,
    /// The classifier $z=Wh+b$.
    pub fc: Linear<T>,
}

impl<T: Real> Net<T> {
    /// Builds and initialises (seeded) the network of `cfg`.
    pub fn new(cfg: &ModelConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let body = match cfg.arch {
            Arch::Mlp => Body::Mlp(Mlp::new(3 * 32 * 32, cfg.width, cfg.depth, &mut rng)),
            Arch::Resnet18 => Body::ResNet(Box::new(ResNet::new(
                &ResNetSpec::resnet18(cfg.sota, cfg.fixdim),
                &mut rng,
            ))),
            Arch::Resnet18Adapt => Body::ResNet(Box::new(ResNet::new(
                &ResNetSpec::resnet18_adapt(cfg.width),
                &mut rng,
            ))),
        };
        Self::with_body(body, cfg.n_classes, cfg.bias, cfg.etf_classifier, &mut rng)
    }

    /// Puts a classifier on `body` (PyTorch default init, or a frozen ETF).
    pub fn with_body(
        body: Body<T>,
        n_classes: usize,
        bias: bool,
        etf: bool,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let d = match &body {
            Body::Mlp(m) => m.feature_dim(),
            Body::ResNet(r) => r.feature_dim(),
        };
        let mut fc = Linear::new(d, n_classes, bias, rng);
        if etf {
            let m = simplex_etf(n_classes, d, EtfEmbedding::Identity)
                .map_err(|e| Error::param("etf-classifier", format!("{e} (feature dim {d})")))?;
            fc.weight.value = m.mapv(T::of).into_dyn();
            fc.weight.trainable = false;
        }
        Ok(Net { body, fc })
    }

    /// Feature dimension $d$.
    pub fn feature_dim(&self) -> usize {
        self.fc.dims().0
    }

    /// Forward pass on a `B × 3 × 32 × 32` batch (`train` selects batch-norm statistics).
    pub fn forward(&mut self, x: Array4<T>, train: bool) -> Result<Output<T>> {
        let features = match &mut self.body {
            Body::Mlp(m) => m.forward(x, train)?,
            Body::ResNet(r) => r.forward(x, train)?,
        };
        let logits = self.fc.forward(features.clone());
        Ok(Output { features, logits })
    }

    /// Backward pass from $\partial\ell/\partial z$ (plus an optional direct
    /// $\partial\ell/\partial h$, e.g. from feature decay); accumulates all gradients.
    pub fn backward(&mut self, d_logits: &Array2<T>, d_features: Option<&Array2<T>>) {
        let mut dh = self.fc.backward(d_logits, true).expect("dx requested");
        if let Some(df) = d_features {
            dh += df;
        }
        match &mut self.body {
            Body::Mlp(m) => m.backward(dh),
            Body::ResNet(r) => r.backward(dh),
        }
    }

    /// $W$ (`K × d`) and $b$.
    pub fn classifier(&self) -> (ArrayView2<'_, T>, Option<ArrayView1<'_, T>>) {
        let w = self
            .fc
            .weight
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("2-D");
        let b = self
            .fc
            .bias
            .as_ref()
            .map(|b| b.value.view().into_dimensionality::<Ix1>().expect("1-D"));
        (w, b)
    }
}

impl<T: Real> Module<T> for Net<T> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        match &mut self.body {
            Body::Mlp(m) => m.visit(prefix, f),
            Body::ResNet(r) => r.visit(prefix, f),
        }
        self.fc.visit(&super::layers::join(prefix, "fc"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(arch: Arch, width: usize, depth: usize, fixdim: usize, sota: bool) -> ModelConfig {
        ModelConfig {
            arch,
            width,
            depth,
            n_classes: 10,
            bias: true,
            etf_classifier: false,
            fixdim,
            sota,
        }
    }

    /// The count from the configuration alone equals the scalars of the built network's
    /// parameters (a slow, obvious reference), for every architecture and option.
    #[test]
    fn n_params_matches_the_built_network() {
        let mut cases = vec![
            cfg(Arch::Mlp, 16, 1, 0, false),
            cfg(Arch::Mlp, 8, 3, 0, false),
            cfg(Arch::Resnet18, 0, 0, 0, false),
            cfg(Arch::Resnet18, 0, 0, 0, true),
            cfg(Arch::Resnet18, 0, 0, 100, true),
            cfg(Arch::Resnet18Adapt, 2, 0, 0, false),
        ];
        cases.push(ModelConfig {
            bias: false,
            etf_classifier: true,
            ..cfg(Arch::Mlp, 12, 2, 0, false)
        });
        for c in cases {
            let mut net: Net<f32> = Net::new(&c, 0).unwrap();
            let mut n = 0u64;
            net.visit("", &mut |_, t| {
                if let TensorMut::Param(p) = t {
                    n += p.len() as u64;
                }
            });
            assert_eq!(c.n_params(), Some(n), "{c:?}");
        }
    }

    /// Absurd sizes (from flags or a config.json) are refused before anything is allocated,
    /// naming the flag and the sizes.
    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        let e = cfg(Arch::Mlp, 1_000_000_000_000, 1, 0, false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`width`") && e.contains("1000000000000") && e.contains("needs at least"),
            "{e}"
        );
        let e = cfg(Arch::Mlp, 1_000_000_000_000, 6, 0, false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`width`") && e.contains("overflows"), "{e}");
        let e = cfg(Arch::Mlp, usize::MAX, 6, 0, false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`width`") && e.contains("overflows"), "{e}");
        let e = cfg(Arch::Resnet18Adapt, usize::MAX / 4, 0, 0, false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`width`") && e.contains("overflows"), "{e}");
        let e = cfg(Arch::Resnet18, 0, 0, 1 << 40, false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`fixdim`"), "{e}");
        let e = cfg(Arch::Mlp, 1, 1 << 62, 0, false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("overflows") || e.contains("needs at least"),
            "{e}"
        );
        assert!(Net::<f32>::new(&cfg(Arch::Mlp, usize::MAX, 1, 0, false), 0).is_err());
    }
}
