#!/usr/bin/env python3
"""One training step (forward + backward, train mode, cross-entropy, f32, batch 128 of 3x32x32)
of the MLP (1024 x 6), resnet18 (ImageNet stem) and resnet18_sota (CIFAR stem) in ufm against
the fastest PyTorch CPU steps we could write, all on the same number of threads, interleaved.

Usage (after `cargo build --release --example nn_step`):
    python benches/compare_torch_nn.py [--threads 2] [--rounds 5] [--steps 3]
                                       [--models mlp,resnet18,resnet18_sota]
                                       [--variants eager,eager-inplace,cl,compiled,compiled-cl]
                                       [--no-compile] [--json results.json]

Run it once with `--threads 2` (same threads as ufm) and once with `--threads 1` (the per-core
ratio, which is the stable number on a shared 2-vCPU machine).

For each round, for each model, ufm (`target/release/examples/nn_step --model M --steps S
--threads T`, a subprocess that builds the net, runs one untimed warm-up step and prints the
seconds of each of S steps) and every PyTorch variant (S steps in this process, after two
untimed warm-up steps) run in an order that rotates from round to round, so that slow phases of
a shared machine hit all of them. Each gives the mean time per step of the round; the table
gives the median and the minimum over `--rounds` rounds, and the ratio ufm / best PyTorch by
medians and by minimums ("torch best" is the variant with the lowest median, resp. minimum).
Before timing, every PyTorch variant takes one step from the same initial weights on the same
batch, and its loss and gradient norm are checked against the `eager` variant's (relative
tolerances 1e-4 for the loss, 1e-3 for the gradient norm: channels-last convolutions and
inductor's fused kernels reorder f32 sums), so all variants are the same model.

The architectures are those of src/nn/models (ufm's `Net`): BasicBlock resnet18 with batch norm,
stride-2 downsampling 1x1 conv + BN shortcut, `sota` = 3x3 stride-1 conv1 and no max pool; the
MLP is Linear-BN-ReLU x 6 of width 1024, then Linear to 10 classes. The batch is fixed
(uniform in [-1, 1), labels i mod 10), built once and reused by every step (no data loading in
either side's timing).

PyTorch variants (all: `torch.set_num_threads(T)`, OMP/MKL thread variables set to T before
torch is imported, `torch.backends.mkldnn.enabled = True` so convolutions go to oneDNN, input and
label tensors allocated once, no optimizer, train mode; `torch.inference_mode`/`no_grad` are
not usable in a training step):
* `eager`: `net.zero_grad(set_to_none=True)` then `F.cross_entropy(net(x), y).backward()`
  (backward hands its freshly computed gradient tensors to `.grad`: no zeroing pass, no add).
* `eager-inplace`: the gradients are allocated once and kept: `zero_grad(set_to_none=False)`
  zeroes them in place and backward accumulates into them (no allocation of .grad tensors,
  one memset and one add per parameter instead).
* `cl` (resnets only): `net.to(memory_format=torch.channels_last)` and a channels-last input,
  oneDNN's native NHWC layout (no reorders around each convolution), otherwise as `eager`.
* `compiled`: `torch.compile` (inductor, CPU C++/OpenMP codegen, default mode, static shapes)
  of the loss function `F.cross_entropy(net(x), y)`; AOTAutograd compiles the backward too, so
  batch norm + ReLU (+ residual add) are fused into single loops in both directions and the
  convolutions/GEMMs stay on oneDNN/MKL; `zero_grad(set_to_none=True)`. Skipped with
  --no-compile, or with a note if inductor fails here.
* `compiled-cl` (resnets only): `compiled` on the channels-last net and input.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--steps", type=int, default=3, help="timed steps per implementation and round")
ap.add_argument("--models", default="mlp,resnet18,resnet18_sota",
                help="comma-separated subset of mlp, resnet18, resnet18_sota")
ap.add_argument("--variants", default="eager,eager-inplace,cl,compiled,compiled-cl",
                help="comma-separated subset of the PyTorch variants")
ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
ap.add_argument("--bin", default="target/release/examples/nn_step")
ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-': stdout)")
ap.add_argument("--malloc", choices=["keep", "default"], default="keep",
                help="keep (default): give PyTorch the glibc malloc settings that ufm's training "
                     "code sets for itself (ufm::nn::keep_freed_memory: no mmap for large blocks, "
                     "freed memory kept), so neither pays page faults for re-allocated "
                     "activations; default: glibc's defaults for PyTorch")
args = ap.parse_args()
MALLOC = "glibc defaults"
if args.malloc == "keep":
    # The same three mallopt calls as ufm::nn::keep_freed_memory, before torch allocates.
    import ctypes  # noqa: E402

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(-4, 0), libc.mallopt(-1, 2**31 - 1), libc.mallopt(-2, 64 << 20))
        MALLOC = "mallopt keep" if all(ok) else f"mallopt refused {ok}"
    except OSError as e:
        MALLOC = f"mallopt unavailable ({e})"
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402  (after the thread variables are set)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.backends.mkldnn.enabled = True
BATCH, CLASSES = 128, 10


# ---------------------------------------------------------------------------------------------
# The networks (identical to src/nn/models)


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
        self.fc = nn.Linear(512, CLASSES)

    def forward(self, x):
        x = self.layers(self.pool(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def mlp(width=1024, depth=6):
    layers = [nn.Flatten(), nn.Linear(3072, width), nn.BatchNorm1d(width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, CLASSES))


MODELS = {"mlp": mlp, "resnet18": ResNet18, "resnet18_sota": lambda: ResNet18(sota=True)}


# ---------------------------------------------------------------------------------------------
# PyTorch variants: make(template, x, y) -> step() returning the loss tensor


def _eager(template, x, y, channels_last=False, set_to_none=True):
    net = copy.deepcopy(template).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if not set_to_none:
        for p in net.parameters():
            p.grad = torch.zeros_like(p)

    def step():
        net.zero_grad(set_to_none=set_to_none)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss

    return step, net


def _compiled(template, x, y, channels_last=False):
    net = copy.deepcopy(template).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def loss_fn(x, y):
        return F.cross_entropy(net(x), y)

    f = torch.compile(loss_fn, dynamic=False)

    def step():
        net.zero_grad(set_to_none=True)
        loss = f(x, y)
        loss.backward()
        return loss

    return step, net


VARIANTS = {
    "eager": (lambda t, x, y: _eager(t, x, y), False, False),
    "eager-inplace": (lambda t, x, y: _eager(t, x, y, set_to_none=False), False, False),
    "cl": (lambda t, x, y: _eager(t, x, y, channels_last=True), True, False),
    "compiled": (lambda t, x, y: _compiled(t, x, y), False, True),
    "compiled-cl": (lambda t, x, y: _compiled(t, x, y, channels_last=True), True, True),
}  # name -> (make, convolutional nets only, needs torch.compile)


def grad_norm(net):
    return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in net.parameters())))


# ---------------------------------------------------------------------------------------------
# ufm


def ufm_step_time(model):
    cmd = [args.bin, "--model", model, "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    secs = json.loads(out)["seconds"]
    return sum(secs) / len(secs)


# ---------------------------------------------------------------------------------------------


def prepare(model, x, y):
    """Builds every wanted variant of `model` from one seeded template, checks that each one's
    first step gives the eager step's loss and gradient norm, warms it up; returns the steps."""
    torch.manual_seed(0)
    template = MODELS[model]()
    wanted = [v for v in args.variants.split(",") if v]
    if "eager" not in wanted:
        wanted.insert(0, "eager")  # the reference of the check (timed too)
    steps, checks, ref = {}, {}, None
    for name in wanted:
        make, conv_only, needs_compile = VARIANTS[name]
        if (conv_only and model == "mlp") or (needs_compile and args.no_compile):
            continue
        try:
            step, net = make(template, x, y)
            loss = float(step().detach())
            gn = grad_norm(net)
            step()  # second warm-up (and any recompilation)
        except Exception as e:  # noqa: BLE001 (torch.compile can fail in many ways)
            print(f"  {model} {name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        if ref is None:
            ref = (loss, gn)
        el, eg = abs(loss - ref[0]) / abs(ref[0]), abs(gn - ref[1]) / abs(ref[1])
        if el > 1e-4 or eg > 1e-3:
            print(f"  check FAILED: {model} {name}: loss {loss:.7g} vs eager {ref[0]:.7g} "
                  f"(rel. {el:.1e} > 1e-4) or grad norm {gn:.7g} vs {ref[1]:.7g} (rel. {eg:.1e} > 1e-3)",
                  file=sys.stderr)
            sys.exit(1)
        steps[name] = step
        checks[name] = {"loss": loss, "grad_norm": gn, "rel_err_loss": el, "rel_err_grad_norm": eg}
    return steps, checks


def main():
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found: run `cargo build --release --example nn_step` first "
                 "(or pass --bin)")
    for v in args.variants.split(","):
        if v and v not in VARIANTS:
            sys.exit(f"--variants: unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            sys.exit(f"--models: unknown model {m!r} (known: {', '.join(MODELS)})")
    print(f"PyTorch {torch.__version__} (mkldnn {torch.backends.mkldnn.is_available()}), "
          f"{args.threads} threads, {args.rounds} rounds x {args.steps} steps, interleaved; malloc: {MALLOC}")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 3, 32, 32, generator=g) * 2 - 1
    y = torch.arange(BATCH) % CLASSES
    runners, checks = {}, {}
    for m in models:
        runners[m], checks[m] = prepare(m, x, y)
        print(f"  {m}: check vs eager (loss, grad norm rel. error): "
              + ", ".join(f"{k} {c['rel_err_loss']:.0e}/{c['rel_err_grad_norm']:.0e}"
                          for k, c in checks[m].items()), flush=True)
    times = {m: {k: [] for k in ["ufm"] + list(runners[m])} for m in models}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for m in models:
            names = list(times[m])
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                if name == "ufm":
                    times[m][name].append(ufm_step_time(m))
                else:
                    st = runners[m][name]
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        st()
                    times[m][name].append((time.perf_counter() - t0) / args.steps)
        loads.append(os.getloadavg()[0])
        print(f"  round {r + 1}/{args.rounds} done (load {loads[-1]:.1f})", flush=True)

    result = {"torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
              "steps": args.steps, "load_min": min(loads), "load_max": max(loads), "models": {}}
    print(f"\nseconds per step, median / min over rounds; 1-min load average "
          f"{min(loads):.1f}-{max(loads):.1f}")
    for m in models:
        med = {k: float(np.median(v)) for k, v in times[m].items()}
        mn = {k: float(np.min(v)) for k, v in times[m].items()}
        tv = [k for k in times[m] if k != "ufm"]
        best_med = min(tv, key=lambda k: med[k]) if tv else None
        best_min = min(tv, key=lambda k: mn[k]) if tv else None
        print(f"\n{m}")
        print(f"  {'implementation':<22} {'median s':>10} {'min s':>10}")
        for k in times[m]:
            print(f"  {('torch ' + k) if k != 'ufm' else 'ufm':<22} {med[k]:10.4f} {mn[k]:10.4f}")
        entry = {"times": times[m], "median": med, "min": mn, "check": checks[m]}
        if tv:
            rmed, rmin = med["ufm"] / med[best_med], mn["ufm"] / mn[best_min]
            print(f"  ufm / torch best: {rmed:.2f} by medians (torch {best_med}), "
                  f"{rmin:.2f} by minimums (torch {best_min})")
            entry.update(torch_best_median=best_med, torch_best_min=best_min,
                         ratio_median=rmed, ratio_min=rmin)
        result["models"][m] = entry
    if args.json:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(text + "\n")
            os.replace(tmp, args.json)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
