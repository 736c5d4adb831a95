//! Network training with hand-written layers (no PyTorch), to check neural collapse on real
//! networks as the original code does (Zhu et al., NeurIPS 2021, *A Geometric Analysis of
//! Neural Collapse with Unconstrained Features*; code `tding1/Neural-Collapse`).
//!
//! A network is a feature map and a linear classifier, trained on
//! $$\min_{\Theta,W,b}\ \frac1N\sum_{i=1}^N\ell\big(W\phi_\Theta(x_i)+b,\,y_i\big)+\frac\lambda2\big(\lVert\Theta\rVert^2+\lVert W\rVert_F^2+\lVert b\rVert^2\big),$$
//! whose last-layer features $h_i=\phi_\Theta(x_i)$ the UFM treats as free variables.
//!
//! | module | what it holds |
//! |---|---|
//! | [`data`] | MNIST (IDX), CIFAR-10 (binary), random labels, preprocessing, augmentation |
//! | [`download`] | `--download`: official files over HTTP(S), md5-verified, moved into place atomically |
//! | [`layers`] | linear, conv2d, batch norm, ReLU, pooling, losses: forward + backward |
//! | [`models`] | MLP, ResNet-18 (torchvision / CIFAR stem / fixdim), `ResNet18_adapt`, ETF classifier |
//! | [`optim`] | SGD, Adam (coupled weight decay), L-BFGS as `torch.optim.LBFGS`, StepLR / MultiStepLR |
//! | [`checkpoint`] | safetensors state dicts with PyTorch names |
//! | [`cuda`] | the same layers as CUDA kernels: `ufm train/validate --device cuda` |
//! | [`train`] | the training loop behind `ufm train` |
//! | [`validate`] | NC metrics and accuracies per checkpoint (`ufm validate`) |

pub mod checkpoint;
pub mod cuda;
pub mod data;
pub mod download;
pub mod layers;
pub mod models;
pub mod optim;
pub mod train;
pub mod validate;
