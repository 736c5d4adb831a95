//! ResNets with basic blocks (He et al. 2016): block
//! $x\mapsto\operatorname{ReLU}\big(\operatorname{BN}_2(C_2\,\operatorname{ReLU}(\operatorname{BN}_1(C_1x)))+S(x)\big)$
//! with $S$ the identity or a 1×1 convolution + BN (`downsample` in torchvision, `shortcut`
//! in `ResNet18_adapt`). Parameter names follow each original's `state_dict`.

use crate::error::{Error, Result};
use crate::nn::layers::conv::ConvInit;
use crate::nn::layers::{
    join, BatchNorm, Conv2d, GlobalAvgPool, MaxPool2d, Module, Relu, TensorMut,
};
use crate::real::Real;
use ndarray::{Array2, Array4, Ix4};
use rand::rngs::StdRng;

/// The first layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// 7×7 stride-2 convolution (padding 3), BN, ReLU, 3×3 stride-2 max pool (padding 1).
    ImageNet,
    /// 3×3 stride-1 convolution (padding 1), BN, ReLU.
    Cifar,
}

/// Shape of a basic-block ResNet.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNetSpec {
    /// Stem.
    pub stem: Stem,
    /// Channels of the four stages.
    pub widths: [usize; 4],
    /// Blocks per stage.
    pub blocks: [usize; 4],
    /// Output channels of the last block (0: `widths[3]`); adds a 1×1 projection shortcut.
    pub fixdim: usize,
    /// Convolution initialisation.
    pub init: ConvInit,
    /// Name of the projection shortcut (`downsample` or `shortcut`).
    pub shortcut_name: &'static str,
    /// Input channels.
    pub in_channels: usize,
}

impl ResNetSpec {
    /// torchvision `resnet18` (ImageNet stem; `sota`: CIFAR stem), `fixdim` as the original.
    pub fn resnet18(sota: bool, fixdim: usize) -> Self {
        ResNetSpec {
            stem: if sota { Stem::Cifar } else { Stem::ImageNet },
            widths: [64, 128, 256, 512],
            blocks: [2, 2, 2, 2],
            fixdim,
            init: ConvInit::KaimingFanOut,
            shortcut_name: "downsample",
            in_channels: 3,
        }
    }
    /// `ResNet18_adapt(width=k)`.
    pub fn resnet18_adapt(k: usize) -> Self {
        ResNetSpec {
            stem: Stem::Cifar,
            widths: [k, 2 * k, 4 * k, 8 * k],
            blocks: [2, 2, 2, 2],
            fixdim: 0,
            init: ConvInit::TorchDefault,
            shortcut_name: "shortcut",
            in_channels: 3,
        }
    }
}

#[derive(Clone, Debug)]
struct Block<T> {
    conv1: Conv2d<T>,
    /// Followed by the fused ReLU.
    bn1: BatchNorm<T>,
    conv2: Conv2d<T>,
    bn2: BatchNorm<T>,
    down: Option<(Conv2d<T>, BatchNorm<T>)>,
    relu2: Relu<T, Ix4>,
}

impl<T: Real> Block<T> {
    fn new(
        c_in: usize,
        planes: usize,
        out: usize,
        stride: usize,
        init: ConvInit,
        rng: &mut StdRng,
    ) -> Self {
        let conv1 = Conv2d::new(c_in, planes, 3, stride, 1, init, rng);
        let conv2 = Conv2d::new(planes, out, 3, 1, 1, init, rng);
        let down = (stride != 1 || c_in != out).then(|| {
            (
                Conv2d::new(c_in, out, 1, stride, 0, init, rng),
                BatchNorm::new(out),
            )
        });
        Block {
            conv1,
            bn1: BatchNorm::new(planes),
            conv2,
            bn2: BatchNorm::new(out),
            down,
            relu2: Relu::new(),
        }
    }

    fn forward(&mut self, x: Array4<T>, train: bool) -> Array4<T> {
        // the projection shortcut reads the block input that conv1 caches (no copy)
        let sc = self
            .down
            .as_mut()
            .map(|(c, b)| b.forward(c.forward_uncached(&x), train));
        let h = self.bn1.forward_relu(self.conv1.forward(x), train);
        let h = self.bn2.forward(self.conv2.forward(h), train);
        // identity shortcut: the block input, as cached by conv1 (no copy)
        let sc = sc.as_ref().or(self.conv1.input()).expect("conv1 input");
        self.relu2.forward_add(h, sc)
    }

    fn backward(&mut self, dy: Array4<T>) -> Array4<T> {
        let d = self.relu2.backward(dy);
        let x = self
            .conv1
            .input()
            .expect("Block::backward called before forward");
        let d_sc = self
            .down
            .as_mut()
            .map(|(c, b)| c.backward_with_input(x, &b.backward(&d), true).expect("dx"));
        let g = self.bn2.backward(&d);
        let g = self.conv2.backward(&g, true).expect("dx");
        let g = self.bn1.backward(&g);
        let mut dx = self.conv1.backward(&g, true).expect("dx");
        dx.zip_mut_with(d_sc.as_ref().unwrap_or(&d), |a, &b| *a += b);
        dx
    }

    fn visit(&mut self, prefix: &str, sc: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        self.conv1.visit(&join(prefix, "conv1"), f);
        self.bn1.visit(&join(prefix, "bn1"), f);
        self.conv2.visit(&join(prefix, "conv2"), f);
        self.bn2.visit(&join(prefix, "bn2"), f);
        if let Some((c, b)) = &mut self.down {
            c.visit(&join(prefix, &format!("{sc}.0")), f);
            b.visit(&join(prefix, &format!("{sc}.1")), f);
        }
    }
}

/// A basic-block ResNet up to the pooled features.
#[derive(Clone, Debug)]
pub struct ResNet<T> {
    spec: ResNetSpec,
    conv1: Conv2d<T>,
    /// Followed by the fused ReLU.
    bn1: BatchNorm<T>,
    pool: Option<MaxPool2d>,
    stages: Vec<Vec<Block<T>>>,
    avg: GlobalAvgPool,
}

impl<T: Real> ResNet<T> {
    /// Builds and initialises (convolutions per `spec.init`, BN weight 1, bias 0).
    pub fn new(spec: &ResNetSpec, rng: &mut StdRng) -> Self {
        let w0 = spec.widths[0];
        let (conv1, pool) = match spec.stem {
            Stem::ImageNet => (
                Conv2d::new(spec.in_channels, w0, 7, 2, 3, spec.init, rng),
                Some(MaxPool2d::new(3, 2, 1)),
            ),
            Stem::Cifar => (
                Conv2d::new(spec.in_channels, w0, 3, 1, 1, spec.init, rng),
                None,
            ),
        };
        let mut c_in = w0;
        let mut stages = Vec::new();
        for s in 0..4 {
            let planes = spec.widths[s];
            let mut blocks = Vec::new();
            for b in 0..spec.blocks[s] {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let last = s == 3 && b + 1 == spec.blocks[s];
                let out = if last && spec.fixdim > 0 {
                    spec.fixdim
                } else {
                    planes
                };
                blocks.push(Block::new(c_in, planes, out, stride, spec.init, rng));
                c_in = out;
            }
            stages.push(blocks);
        }
        ResNet {
            spec: spec.clone(),
            conv1,
            bn1: BatchNorm::new(w0),
            pool,
            stages,
            avg: GlobalAvgPool::new(),
        }
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        if self.spec.fixdim > 0 {
            self.spec.fixdim
        } else {
            self.spec.widths[3]
        }
    }

    /// Pooled features of a batch.
    pub fn forward(&mut self, x: Array4<T>, train: bool) -> Result<Array2<T>> {
        if x.shape()[1] != self.spec.in_channels {
            return Err(Error::shape(
                "ResNet input channels",
                format!("{}", self.spec.in_channels),
                format!("{}", x.shape()[1]),
            ));
        }
        let mut h = self.bn1.forward_relu(self.conv1.forward(x), train);
        if let Some(p) = &mut self.pool {
            h = p.forward(&h);
        }
        for st in &mut self.stages {
            for b in st {
                h = b.forward(h, train);
            }
        }
        Ok(self.avg.forward(&h))
    }

    /// Backward from $\partial\ell/\partial h$ (the input gradient is not needed).
    pub fn backward(&mut self, dh: Array2<T>) {
        let mut d = self.avg.backward(&dh);
        for st in self.stages.iter_mut().rev() {
            for b in st.iter_mut().rev() {
                d = b.backward(d);
            }
        }
        if let Some(p) = &mut self.pool {
            d = p.backward(&d);
        }
        let g = self.bn1.backward(&d);
        self.conv1.backward(&g, false);
    }
}

impl<T: Real> Module<T> for ResNet<T> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, TensorMut<'_, T>)) {
        self.conv1.visit(&join(prefix, "conv1"), f);
        self.bn1.visit(&join(prefix, "bn1"), f);
        let sc = self.spec.shortcut_name;
        for (s, st) in self.stages.iter_mut().enumerate() {
            for (i, b) in st.iter_mut().enumerate() {
                b.visit(&join(prefix, &format!("layer{}.{i}", s + 1)), sc, f);
            }
        }
    }
}
