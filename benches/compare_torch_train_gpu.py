#!/usr/bin/env python3
"""ResNet-18 training throughput in PyTorch (cuDNN), to compare with `ufm train --device cuda`.

    python3 benches/compare_torch_train_gpu.py --data-dir DIR [--dataset cifar10|mnist]
        [--batch 128 --epochs 2 --fixdim 0 --lr 0.05] [--tf32]
    python3 benches/compare_torch_train_gpu.py --cpu --steps 2 --data-dir ../shared/data/cifar10-subset
        # smoke test without a GPU

The model is torchvision's `resnet18` layout (ImageNet stem: 7x7/2 conv, BN, ReLU, 3x3/2 max
pool; four stages of two basic blocks; adaptive average pool; fc to 10 classes), written out
here so torchvision is not needed; `--fixdim d` makes the last block output d channels with a
1x1 projection shortcut, as `ufm --fixdim` and the original code. Initialisation as
torchvision (kaiming_normal fan_out for convolutions). SGD, momentum 0.9, weight decay 5e-4,
softmax cross-entropy, batch 128, as `ufm train`. f32: cuDNN's TF32 convolutions are turned
off unless --tf32 (PyTorch's default is on; the issue's target is f32).

Data: the CIFAR-10 binary batches in DIR/cifar-10-batches-bin (any number of records) or the
MNIST IDX files in DIR/MNIST/raw (resized to 32x32 by bilinear interpolation, 3 channels),
normalised with the original code's constants and held on the device, so the input pipeline
costs nothing (ufm's loader thread has to keep up by itself: the ratio favours PyTorch).
Images/s is measured per epoch between torch.cuda.synchronize() calls; the last epoch is
reported (the first includes cuDNN autotuning). Needs only torch (no numpy, no torchvision).
Peak memory is
torch.cuda.max_memory_allocated() over the run. Prints one JSON object per line.
"""
import argparse
import glob
import gzip
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, planes, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        sc = x if self.downsample is None else self.downsample(x)
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(h)) + sc, inplace=True)


class ResNet18(nn.Module):
    """torchvision resnet18 (ImageNet stem), optional fixdim on the last block."""

    def __init__(self, num_classes=10, fixdim=0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for s, planes in enumerate([64, 128, 256, 512]):
            blocks = []
            for b in range(2):
                stride = 2 if s > 0 and b == 0 else 1
                out = fixdim if (s == 3 and b == 1 and fixdim > 0) else planes
                blocks.append(BasicBlock(cin, planes, out, stride))
                cin = out
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        h = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(h)


def load_cifar(d):
    files = sorted(glob.glob(os.path.join(d, "cifar-10-batches-bin", "data_batch_*.bin")))
    if not files:
        raise SystemExit(f"no cifar-10-batches-bin/data_batch_*.bin in {d}")
    raw = torch.cat(
        [torch.frombuffer(bytearray(open(f, "rb").read()), dtype=torch.uint8).view(-1, 3073) for f in files]
    )
    y = raw[:, 0].long()
    x = raw[:, 1:].reshape(-1, 3, 32, 32).float() / 255.0
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(), y


def load_mnist(d):
    def idx(name):
        with gzip.open(os.path.join(d, "MNIST", "raw", name), "rb") as f:
            b = f.read()
        return b

    img = idx("train-images-idx3-ubyte.gz")
    lab = idx("train-labels-idx1-ubyte.gz")
    n, r, c = (int.from_bytes(img[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
    x = torch.frombuffer(bytearray(img[16:]), dtype=torch.uint8).view(n, 1, r, c).float() / 255.0
    y = torch.frombuffer(bytearray(lab[8:]), dtype=torch.uint8).long()
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = ((x - 0.1307) / 0.3081).repeat(1, 3, 1, 1)
    return x.contiguous(), y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", choices=["cifar10", "mnist"], default="cifar10")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--fixdim", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in cuDNN and matmuls")
    ap.add_argument("--steps", type=int, default=0, help="stop each epoch after this many batches")
    ap.add_argument("--cpu", action="store_true", help="smoke test on the CPU")
    args = ap.parse_args()
    if args.cpu:
        dev, name, sync = torch.device("cpu"), "cpu", (lambda: None)
    elif not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch.cuda.is_available() is False"}))
        return
    else:
        dev, name, sync = torch.device("cuda"), torch.cuda.get_device_name(0), torch.cuda.synchronize
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.manual_seed(6)
    x, y = load_cifar(args.data_dir) if args.dataset == "cifar10" else load_mnist(args.data_dir)
    x, y = x.to(dev), y.to(dev)
    model = ResNet18(10, args.fixdim).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    if not args.cpu:
        torch.cuda.reset_peak_memory_stats()
    n = x.shape[0]
    impl = "torch_cudnn_" + ("tf32" if args.tf32 else "fp32")
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n, device=dev)
        batches = [perm[i : i + args.batch] for i in range(0, n, args.batch)]
        batches = [b for b in batches if len(b) > 1]
        if args.steps:
            batches = batches[: args.steps]
        model.train()
        sync()
        t0 = time.perf_counter()
        loss_sum, seen = torch.zeros((), device=dev), 0
        for b in batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[b]), y[b])
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(b)
            seen += len(b)
        sync()
        dt = time.perf_counter() - t0
        rec = {
            "impl": impl,
            "device": name,
            "dataset": args.dataset,
            "model": "resnet18",
            "fixdim": args.fixdim,
            "batch": args.batch,
            "epoch": epoch,
            "images": seen,
            "seconds": dt,
            "images_per_s": seen / dt,
            "loss": float(loss_sum) / max(seen, 1),
            "torch": torch.__version__,
        }
        if not args.cpu:
            rec["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
