"""PyTorch CPU reference for benches/nn.rs: forward + backward (train mode, cross-entropy) of
resnet18 (ImageNet stem and CIFAR stem) and the MLP (1024 x 6), batch 128 of 3x32x32, float32,
with the same number of threads as the Rust run.

    cargo bench --bench nn                      # writes target/criterion/nn/*/new/estimates.json
    /opt/pyenv/bin/python benches/compare_torch_nn.py [--threads 2]

    # interleaved (preferred on a shared machine): for each model, PyTorch with --threads and
    # with 1 thread, then the criterion bench of the same model, so both see the same load
    /opt/pyenv/bin/python benches/compare_torch_nn.py --threads 2 --reps 3 --run-rust [--rust-one-thread] [--models resnet18_sota]

Prints PyTorch's median time per step with the same number of threads and with 1 thread
(on a loaded 2-vCPU VM PyTorch's OpenMP threads busy-wait and 2 threads ran 3.5x slower than
1), and, when the criterion results exist, the Rust median and the ratios Rust / PyTorch.
The 1-minute load average is printed with each line.
"""
import argparse
import json
import os
import subprocess
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
    ap.add_argument("--run-rust", action="store_true",
                    help="run `cargo bench --bench nn` for each model right after PyTorch")
    ap.add_argument("--rust-one-thread", action="store_true",
                    help="with --run-rust, also run the Rust bench with RAYON_NUM_THREADS=1")
    ap.add_argument("--models", default="mlp,resnet18,resnet18_sota",
                    help="comma-separated subset of mlp, resnet18, resnet18_sota")
    a = ap.parse_args()
    wanted = {m + "_fwd_bwd_b128" for m in a.models.split(",")}
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(128, 3, 32, 32) * 2 - 1
    y = torch.arange(128) % 10
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    root = os.path.join(repo, "target", "criterion", "nn")
    for name, make in [("mlp_fwd_bwd_b128", mlp), ("resnet18_fwd_bwd_b128", ResNet18),
                       ("resnet18_sota_fwd_bwd_b128", lambda: ResNet18(sota=True))]:
        if name not in wanted:
            continue
        net = make()
        load0 = os.getloadavg()[0]
        torch.set_num_threads(a.threads)
        t = time_step(net, x, y, a.reps)
        torch.set_num_threads(1)
        t1 = time_step(net, x, y, a.reps)
        line = (f"{name}: PyTorch {torch.__version__} {a.threads} threads {t * 1e3:.1f} ms, "
                f"1 thread {t1 * 1e3:.1f} ms")
        rid = f"{name}_threads{a.threads}"
        rid1 = f"{name}_threads1"
        if a.run_rust:
            for th, r in [(a.threads, rid)] + ([(1, rid1)] if a.rust_one_thread else []):
                env = dict(os.environ, RAYON_NUM_THREADS=str(th))
                subprocess.run(["cargo", "bench", "--bench", "nn", "--", "--exact", f"nn/{r}"],
                               cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
        line += f" | load {load0:.1f}->{os.getloadavg()[0]:.1f}"
        est = os.path.join(root, rid, "new", "estimates.json")
        if os.path.exists(est):
            rust = json.load(open(est))["median"]["point_estimate"] / 1e9
            line += (f" | ufm ({a.threads} threads) {rust * 1e3:.1f} ms | ratio ufm/PyTorch "
                     f"{rust / t:.2f} (same threads), {rust / min(t, t1):.2f} (PyTorch's faster setting)")
        est1 = os.path.join(root, rid1, "new", "estimates.json")
        if a.rust_one_thread and os.path.exists(est1):
            r1 = json.load(open(est1))["median"]["point_estimate"] / 1e9
            line += f" | ufm (1 thread) {r1 * 1e3:.1f} ms, ratio to PyTorch 1 thread {r1 / t1:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
