"""Turning array-likes (NumPy arrays, torch CPU tensors, anything with ``__dlpack__`` or
``__array__``) into the NumPy arrays the extension reads, without copying when possible.

The extension calls these helpers for every array argument, so that every entry point
accepts the same inputs and raises the same ``ValueError`` for bad ones. torch is never
imported: tensors are read through DLPack (zero copy) or ``__array__``.
"""

import numpy as np

_KDL_CPU = 1  # DLPack device type of host memory


def _to_numpy(x, name):
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device = x.__dlpack_device__()
        if int(device[0]) != _KDL_CPU:
            raise ValueError(
                f"{name} lives on a non-CPU device (DLPack device {tuple(int(v) for v in device)}); "
                "move it to the CPU first, e.g. tensor.cpu()"
            )
        if getattr(x, "requires_grad", False):
            x = x.detach()
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError, ValueError):
            pass  # e.g. a dtype NumPy lacks (bfloat16): reported below
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is bad input
        raise ValueError(
            f"{name} cannot be read as a NumPy array ({e}); pass a NumPy array or a CPU tensor "
            "of float32/float64 (e.g. tensor.float())"
        ) from e


def _native_aligned(a):
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.aligned:
        a = np.require(a, requirements="A")
    return a


def as_features(x, name="features"):
    """An N x d float32/float64 array (any strides; copied only when misaligned or in a
    foreign byte order)."""
    a = _to_numpy(x, name)
    if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        raise ValueError(
            f"{name} must be float32 or float64, got {a.dtype}; convert it first "
            "(e.g. .astype(np.float32), or tensor.float())"
        )
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N samples x d features), got shape {a.shape}")
    return _native_aligned(a)


def as_labels(x, name="labels"):
    """A contiguous uint32 array of N labels (copied unless it already is one)."""
    a = _to_numpy(x, name)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {a.shape}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0:
            i = int(np.argmax(a < 0))
            raise ValueError(f"{name}: label {int(a[i])} at index {i} is negative")
        if hi > np.iinfo(np.uint32).max:
            raise ValueError(f"{name}: label {hi} does not fit in 32 bits")
    return np.ascontiguousarray(a, dtype=np.uint32)


def as_real(x, name, ndim):
    """A contiguous float64 array of `ndim` dimensions (W: 2, b: 1)."""
    a = _to_numpy(x, name)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)
