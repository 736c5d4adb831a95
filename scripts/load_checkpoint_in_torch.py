"""Load a `ufm train` checkpoint into a PyTorch model (no `safetensors` package needed).

    /opt/pyenv/bin/python scripts/load_checkpoint_in_torch.py model_weights/<uid>/epoch_001.safetensors

Reads the safetensors file by hand (8-byte header length, JSON header, raw little-endian
data) into a state dict, loads it with `strict=True` into the torchvision-layout ResNet-18
defined in scripts/make_torch_fixtures.py, and prints the eval-mode logits of one image.
With the `safetensors` package, `safetensors.torch.load_file(path)` gives the same dict.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

DT = {"F32": np.float32, "F64": np.float64, "I64": np.int64}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    sd = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=DT[info["dtype"]]).reshape(info["shape"])
        sd[name] = torch.from_numpy(arr.copy())
    return sd, header.get("__metadata__", {})


def main():
    path = sys.argv[1]
    sd, meta = load_safetensors(path)
    sys.argv = [sys.argv[0]]
    here = os.path.dirname(os.path.abspath(__file__))
    src = open(os.path.join(here, "make_torch_fixtures.py")).read()
    ns = {"nn": torch.nn, "F": torch.nn.functional, "torch": torch}
    # only the model classes, not the fixture generation
    exec(src[src.index("class BasicBlock"):src.index("def name_hash")], ns)
    net = ns["ResNet18"]().float()
    net.load_state_dict(sd, strict=True)
    net.eval()
    print(f"loaded {len(sd)} tensors (epoch {meta.get('epoch')}) with strict=True")
    with torch.no_grad():
        _, z = net(torch.zeros(1, 3, 32, 32))
    print("logits of a zero image:", z.numpy().round(4))


if __name__ == "__main__":
    main()
