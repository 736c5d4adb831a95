"""ufm.NCAccumulator: batches = one call on the whole array (1e-12), shards merged = whole,
save/load/pickle round trips, validation of loaded states, the GIL released in update."""

import copy
import pickle
import threading
import time

import numpy as np
import pytest

import ufm
from conftest import make_data, rel_close
from reference import METRIC_KEYS, all_metrics

ACC_KEYS = [k for k in METRIC_KEYS if k != "ncc_agreement"]


def batches(n, sizes, seed=0):
    """Split range(n) into consecutive batches of the cycled sizes."""
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < n:
        s = int(rng.choice(sizes))
        out.append(slice(start, min(n, start + s)))
        start += s
    return out


def feed(acc, h, y, sl):
    for s in sl:
        acc.update(h[s], y[s])
    return acc


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batches_equal_one_call_on_the_whole_array(dtype):
    h, y, w, b = make_data(n=3000, d=16, k=6, seed=10, offset=100.0)
    h = h.astype(dtype)
    acc = feed(ufm.NCAccumulator(6, 16), h, y, batches(3000, [1, 7, 64, 128, 500], seed=1))
    assert acc.n_samples == 3000
    got = acc.compute(w, b)
    whole = ufm.metrics(h, y, w, b, strategy="one-pass")
    assert list(got) == [k for k in whole if k != "ncc_agreement"]
    for key in ACC_KEYS:
        assert rel_close(got[key], whole[key], 1e-12), (key, got[key], whole[key])
    assert got["class_counts"] == whole["class_counts"]
    # The default (two-pass) route and the slow NumPy reference agree too.
    auto = ufm.metrics(h, y, w, b)
    ref = all_metrics(h.astype(np.float64), y, 6, w, b)
    for key in ACC_KEYS:
        assert rel_close(got[key], auto[key], 1e-10), key
        assert rel_close(got[key], ref[key], 1e-9), key


def test_statistics_equal_numpy():
    h, y, _, _ = make_data(n=1000, d=7, k=3, seed=11, offset=-30.0)
    acc = feed(ufm.NCAccumulator(3, 7), h, y, batches(1000, [33, 100], seed=2))
    counts = np.bincount(y, minlength=3)
    means = np.stack([h[y == c].mean(axis=0) for c in range(3)])
    dev = h - means[y]
    assert acc.counts.tolist() == counts.tolist()
    assert np.allclose(acc.means, means, rtol=0, atol=1e-12 * 30)
    s = dev.T @ dev
    assert np.abs(acc.scatter - s).max() <= 1e-12 * np.abs(s).max()
    ss = np.array([np.sum(dev[y == c] ** 2) for c in range(3)])
    assert np.allclose(acc.class_sums_of_squares, ss, rtol=1e-12, atol=0)


def test_merge_of_four_shards_equals_the_whole():
    h, y, w, b = make_data(n=4000, d=11, k=5, seed=12, offset=10.0)
    whole = feed(ufm.NCAccumulator(5, 11), h, y, batches(4000, [256], seed=3))
    shards = []
    for i, part in enumerate(np.array_split(np.arange(4000), 4)):
        acc = ufm.NCAccumulator(5, 11)
        # Shards see their rows in different batch sizes, one of them in float32 order F.
        hp = h[part] if i != 2 else np.asfortranarray(h[part])
        feed(acc, hp, y[part], batches(len(part), [10, 300], seed=i))
        shards.append(acc)
    merged = ufm.NCAccumulator(5, 11)
    for s in shards:
        merged.merge(s)
    assert merged.n_samples == 4000 and shards[0].n_samples == 1000  # shards unchanged
    got, want = merged.compute(w, b), whole.compute(w, b)
    assert got["class_counts"] == want["class_counts"]
    for key in ACC_KEYS:
        assert rel_close(got[key], want[key], 1e-12), key
    # Merging in a tree (as across nodes) gives the same.
    a, c = shards[0].copy(), shards[2].copy()
    a.merge(shards[1])
    c.merge(shards[3])
    a.merge(c)
    tree = a.compute(w, b)
    for key in ACC_KEYS:
        assert rel_close(tree[key], want[key], 1e-12), key


def test_save_load_pickle_and_copy_round_trip(tmp_path):
    h, y, w, b = make_data(n=800, d=6, k=4, seed=13)
    acc = feed(ufm.NCAccumulator(4, 6), h[:500], y[:500], batches(500, [50]))
    path = tmp_path / "acc.npz"
    acc.save(path)
    loaded = ufm.NCAccumulator.load(path)
    pickled = pickle.loads(pickle.dumps(acc))
    deep = copy.deepcopy(acc)
    for other in (loaded, pickled, deep):
        assert other.n_samples == 500
        assert np.array_equal(other.means, acc.means)
        assert np.array_equal(other.scatter, acc.scatter)
        other.update(h[500:], y[500:])
    acc.update(h[500:], y[500:])
    want = acc.compute(w, b)
    # The copy continues bit for bit; a restored state (saved with the buffered rows
    # summarised) groups the later rows differently, which changes only the rounding.
    assert deep.compute(w, b) == want
    for other in (loaded, pickled):
        got = other.compute(w, b)
        for key in ACC_KEYS:
            assert rel_close(got[key], want[key], 1e-12), key
    # NumPy reads the file: versioned, with the documented members.
    with np.load(path) as f:
        assert int(f["ufm_class_stats_version"]) == ufm.CLASS_STATS_VERSION == 1
        assert f["counts"].dtype == np.uint64 and f["means"].shape == (4, 6)
        assert f["scatter"].shape == (6, 6) and f["class_ss"].shape == (4,)
    # Without the scatter.
    small = feed(ufm.NCAccumulator(4, 6, scatter=False), h, y, [slice(0, 800)])
    small.save(tmp_path / "small.npz")
    back = ufm.NCAccumulator.load(tmp_path / "small.npz")
    assert not back.tracks_scatter and back.scatter is None
    assert back.compute()["nc2_h"] == small.compute()["nc2_h"]


def test_loaded_states_are_validated(tmp_path):
    h, y, _, _ = make_data(n=300, d=5, k=3, seed=14)
    acc = feed(ufm.NCAccumulator(3, 5), h, y, [slice(0, 300)])
    good = tmp_path / "good.npz"
    acc.save(good)
    with np.load(good) as f:
        members = {k: f[k] for k in f.files}

    def write(name, **changes):
        m = dict(members)
        for k, v in changes.items():
            if v is None:
                m.pop(k)
            else:
                m[k] = v
        p = tmp_path / name
        np.savez(p, **m)
        return p

    cases = {
        "counts": write("counts.npz", counts=members["counts"][:2]),
        "scatter": write("scatter.npz", scatter=np.eye(4)),
        "symmetric": write("asym.npz", scatter=members["scatter"] + np.triu(np.ones((5, 5)), 1)),
        "version 7": write("version.npz", ufm_class_stats_version=np.uint64(7)),
        "no `means`": write("nomeans.npz", means=None),
        "ufm_class_stats_version": write("other.npz", ufm_class_stats_version=None),
        "float64": write("dtype.npz", means=members["means"].astype(np.float32)),
        "non-finite": write("nan.npz", means=np.full((3, 5), np.nan)),
    }
    for needle, path in cases.items():
        with pytest.raises(ValueError, match=needle):
            ufm.NCAccumulator.load(path)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="trunc.npz"):
        ufm.NCAccumulator.load(trunc)
    with pytest.raises(FileNotFoundError):
        ufm.NCAccumulator.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError):
        ufm.NCAccumulator.from_bytes(b"junk")


def test_a_bad_batch_raises_and_changes_nothing():
    h, y, w, b = make_data(n=400, d=4, k=3, seed=15)
    acc = feed(ufm.NCAccumulator(3, 4), h, y, [slice(0, 400)])
    before = acc.compute(w, b)
    bad = h[:50].copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match="feature row 17"):
        acc.update(bad, y[:50])
    with pytest.raises(ValueError, match="label 3"):
        acc.update(h[:2], np.array([0, 3]))
    with pytest.raises(ValueError, match="4 columns"):
        acc.update(h[:, :3], y)
    with pytest.raises(ValueError, match="labels"):
        acc.update(h[:5], y[:4])
    assert acc.n_samples == 400
    assert acc.compute(w, b) == before


def test_compute_needs_every_class_and_the_scatter_for_nc1():
    h, y, _, _ = make_data(n=200, d=4, k=3, seed=16)
    acc = ufm.NCAccumulator(4, 4)
    acc.update(h, y)  # class 3 never seen
    with pytest.raises(ValueError, match=r"class\(es\) \[3\] have no samples"):
        acc.compute()
    acc2 = ufm.NCAccumulator(3, 4, scatter=False)
    acc2.update(h, y)
    r = acc2.compute()
    assert "nc1" not in r and "nc2_h" in r
    with pytest.raises(ValueError, match="scatter"):
        acc2.compute(metrics="nc1")
    full = ufm.NCAccumulator(3, 4)
    full.update(h, y)
    with pytest.raises(ValueError, match="second pass"):
        full.compute(np.ones((3, 4)), metrics="ncc_agreement")


def test_merge_checks_shapes():
    a, b = ufm.NCAccumulator(3, 4), ufm.NCAccumulator(3, 5)
    with pytest.raises(ValueError, match="K=3, d=4"):
        a.merge(b)
    with pytest.raises(ValueError, match="with and without the scatter"):
        a.merge(ufm.NCAccumulator(3, 4, scatter=False))
    with pytest.raises(ValueError, match="n_classes"):
        ufm.NCAccumulator(1, 4)
    with pytest.raises(ValueError, match="feature_dim"):
        ufm.NCAccumulator(3, 0)
    with pytest.raises(ValueError, match="too large"):
        ufm.NCAccumulator(3, 2**40)


def test_update_releases_the_gil():
    """While one large update runs, another Python thread keeps running (with the GIL held
    for the whole update it could not run at all)."""
    rng = np.random.default_rng(17)
    h = rng.normal(size=(40_000, 256))
    y = rng.integers(0, 10, size=40_000)
    acc = ufm.NCAccumulator(10, 256)
    acc.update(h[:1000], y[:1000])  # warm up
    ticks, done = [0], threading.Event()

    def ticker():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.0005)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.01)
    start_ticks = ticks[0]
    t0 = time.perf_counter()
    acc.update(h, y)
    elapsed = time.perf_counter() - t0
    during = ticks[0] - start_ticks
    done.set()
    t.join()
    assert elapsed > 0.02, "update too fast to tell; enlarge the batch"
    assert during >= 5, f"only {during} ticks during a {elapsed:.3f} s update"


def _shard_worker(args):
    """Runs in another process: accumulate one shard, return the accumulator (pickled)."""
    seed, rows = args
    h, y, _, _ = make_data(n=2000, d=7, k=4, seed=seed)
    acc = ufm.NCAccumulator(4, 7)
    for s in range(rows.start, rows.stop, 100):
        acc.update(h[s:min(s + 100, rows.stop)], y[s:min(s + 100, rows.stop)])
    return acc


def test_shards_from_other_processes_merge_into_the_whole():
    import concurrent.futures
    import multiprocessing

    h, y, w, b = make_data(n=2000, d=7, k=4, seed=18)
    parts = [range(0, 700), range(700, 1500), range(1500, 2000)]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        shards = list(pool.map(_shard_worker, [(18, r) for r in parts]))
    merged = ufm.NCAccumulator(4, 7)
    for s in shards:
        merged.merge(s)
    whole = ufm.NCAccumulator(4, 7)
    whole.update(h, y)
    got, want = merged.compute(w, b), whole.compute(w, b)
    assert got["class_counts"] == want["class_counts"]
    for key in ACC_KEYS:
        assert rel_close(got[key], want[key], 1e-12), key
