"""PyTorch CPU reference for benches/nn.rs: forward + backward (train mode, cross-entropy) of
resnet18 (ImageNet stem and CIFAR stem) and the MLP (1024 x 6), batch 128 of 3x32x32, float32,
with the same number of threads as the Rust run.

    cargo bench --bench nn                      # writes target/criterion/nn/*/new/estimates.json
    /opt/pyenv/bin/python benches/compare_torch_nn.py [--threads 2]

Prints PyTorch's median time per step with the same number of threads and with 1 thread
(on a loaded 2-vCPU VM PyTorch's OpenMP threads busy-wait and 2 threads ran 3.5x slower than
1), and, when the criterion results exist, the Rust mean and the ratios Rust / PyTorch.
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    def __init__(self, sota=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False) if sota else nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pool = nn.Identity() if sota else nn.MaxPool2d(3, 2, 1)
        inp, layers = 64, []
        for i, w in enumerate([64, 128, 256, 512]):
            for b in range(2):
                layers.append(BasicBlock(inp, w, 2 if (i > 0 and b == 0) else 1))
                inp = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        x = self.layers(self.pool(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def mlp(width=1024, depth=6):
    layers = [nn.Flatten(), nn.Linear(3072, width), nn.BatchNorm1d(width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def time_step(net, x, y, reps):
    net.train()
    ts = []
    for i in range(reps + 2):
        t0 = time.perf_counter()
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        if i >= 2:
            ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(128, 3, 32, 32) * 2 - 1
    y = torch.arange(128) % 10
    root = os.path.join(os.path.dirname(__file__), "..", "target", "criterion", "nn")
    for name, net in [("mlp_fwd_bwd_b128", mlp()), ("resnet18_fwd_bwd_b128", ResNet18()),
                      ("resnet18_sota_fwd_bwd_b128", ResNet18(sota=True))]:
        torch.set_num_threads(a.threads)
        t = time_step(net, x, y, a.reps)
        torch.set_num_threads(1)
        t1 = time_step(net, x, y, a.reps)
        line = (f"{name}: PyTorch {torch.__version__} {a.threads} threads {t * 1e3:.1f} ms, "
                f"1 thread {t1 * 1e3:.1f} ms")
        est = os.path.join(root, f"{name}_threads{a.threads}", "new", "estimates.json")
        if os.path.exists(est):
            rust = json.load(open(est))["mean"]["point_estimate"] / 1e9
            line += (f" | ufm ({a.threads} threads) {rust * 1e3:.1f} ms | ratio ufm/PyTorch "
                     f"{rust / t:.2f} (same threads), {rust / min(t, t1):.2f} (PyTorch's faster setting)")
        print(line)


if __name__ == "__main__":
    main()
