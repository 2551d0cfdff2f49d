"""Streaming per-channel statistics: exact against brute force, order-free, persisted, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.store import load_cache
from atlaswidgets.cache.stats_capture import StatsRecorder
from atlaswidgets.cache.topk import TOKENS_HW, ChannelStats, stats_config
from atlaswidgets.cache.units import unit_samples

from .conftest import N_SAMPLES, layer_output

CFG = {"k": 6, "bins": 16, "reservoir": 4, "seed": 3}


def cap(model, data, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("per_image", 4)
    kw.setdefault("stats", CFG)
    return capture(model, data, ["conv1", "conv2"], **kw)


def assert_stats_equal(a: ChannelStats, b: ChannelStats) -> None:
    assert a.config == b.config and a.hw == b.hw and a.n_samples == b.n_samples
    for name in ChannelStats._TENSORS:
        assert torch.equal(getattr(a, name).cpu(), getattr(b, name).cpu()), name
    for h in ("positions", "maxima"):
        for f in ("e", "a", "counts", "lo", "hi"):
            assert torch.equal(getattr(getattr(a, h), f).cpu(), getattr(getattr(b, h), f).cpu()), (h, f)


@pytest.fixture(scope="module")
def cache(model, data):
    return cap(model, data, batch_size=7)


@pytest.fixture(scope="module")
def truth(model, data):
    """Every position of conv2 (before its in-place ReLU), computed by hand: (N, C, H, W)."""
    return layer_output(model, "conv2", data[0])


def test_top_k_and_histograms_match_brute_force(cache, truth):
    st = cache.stats["conv2"]
    n, c, h, w = truth.shape
    assert st.n_samples == N_SAMPLES and st.hw == (h, w)
    best, pos = truth.flatten(2).max(dim=2)  # (N, C)
    for ch in (0, 5, 15):
        top = st.top(ch)
        want = torch.argsort(best[:, ch], descending=True, stable=True)[: CFG["k"]]
        assert top.sample_id.tolist() == want.tolist()
        assert np.array_equal(top.values, best[want, ch].numpy())
        assert top.yx.tolist() == [[int(p) // w, int(p) % w] for p in pos[want, ch]]
        # the histogram of every position is exact: each value counted in the bin whose edges hold it
        edges, counts = st.histogram(ch)
        vals = truth[:, ch].flatten().double().numpy()
        assert counts.sum() == n * h * w and edges[0] <= vals.min() and vals.max() < edges[-1]
        assert np.array_equal(counts, np.bincount(np.searchsorted(edges, vals, "right") - 1, minlength=16))
        # the bin width bound of the module docstring
        assert edges[1] - edges[0] <= 2 * (vals.max() - vals.min()) / 15
        edges, counts = st.histogram(ch, of="maxima")
        assert counts.sum() == n


def test_statistics_see_every_position_whatever_the_sampling_and_batching(model, data, cache):
    other = cap(model, data, sample="mean", batch_size=40)
    for name in ("conv1", "conv2"):
        assert_stats_equal(cache.stats[name], other.stats[name])


def test_merging_halves_in_either_order_is_exact(truth):
    def fed(lo, hi):
        st = ChannelStats(16, (8, 8), **CFG)
        st.update(truth[lo:hi], lo)
        return st

    whole = fed(0, N_SAMPLES)
    assert_stats_equal(fed(0, 13).merge(fed(13, N_SAMPLES)), whole)
    assert_stats_equal(fed(13, N_SAMPLES).merge(fed(0, 13)), whole)


def test_quantile_samples_fall_in_their_range(truth):
    st = ChannelStats(16, (8, 8), k=8, bins=32, reservoir=8, seed=0)
    big = torch.cat([truth, truth * 0.5 + 0.1, truth * 1.5 - 0.2, truth * 0.8])  # 160 samples
    for i in range(0, len(big), 32):
        st.update(big[i : i + 32], i)
    best = big.flatten(2).amax(2).double().numpy()
    for ch in (2, 9):
        s = st.samples(ch, n=5, seed=1)
        assert list(s.groups) == ["top", "[0.99, 0.999]", "[0.9, 0.99]", "[0.5, 0.9]", "[0, 0.5]", "random"]
        edges, _ = st.histogram(ch, of="maxima")
        width = edges[1] - edges[0]
        for name, (qa, qb) in s.ranges.items():
            ex = s.groups[name]
            assert 1 <= len(ex) <= 5
            assert np.array_equal(ex.values, best[ex.sample_id, ch].astype(np.float32))
            lo, hi = np.quantile(best[:, ch], [qa, qb])
            assert lo - width <= ex.values.min() and ex.values.max() <= hi + width, name
            assert len(set(ex.sample_id.tolist())) == len(ex)
        assert len(s.groups["random"]) == 5
        again, other = st.samples(ch, n=5, seed=1), st.samples(ch, n=5, seed=2)
        assert all(np.array_equal(again.groups[k].sample_id, s.groups[k].sample_id) for k in s.groups)
        assert any(not np.array_equal(other.groups[k].sample_id, s.groups[k].sample_id) for k in s.groups)
        assert abs(st.quantile(ch, 0.5) - np.quantile(best[:, ch], 0.5)) <= width


def test_random_sample_is_spread_over_the_distribution():
    # 4000 samples of one channel, uniform maxima in [0, 1): a uniform sample has mean ~0.5
    x = torch.rand(4000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    st = ChannelStats(1, (1, 1), k=4, bins=16, reservoir=32, seed=0)
    for i in range(0, 4000, 500):
        st.update(x[i : i + 500], i)
    means = [st.sample_range(0, 0.0, 1.0, 200, seed=s).values.mean() for s in range(5)]
    assert all(abs(m - 0.5) < 0.08 for m in means), means
    low = st.sample_range(0, 0.0, 0.5, 50, seed=0).values
    assert len(low) == 50 and low.max() < 0.5 + 1 / 16


def test_store_round_trip_and_resume_give_identical_statistics(model, data, cache, tmp_path):
    images, labels = data
    path = cache.save(tmp_path / "saved", shard_samples=16)
    loaded = load_cache(path, device="cpu")
    for name in cache.stats:
        assert_stats_equal(cache.stats[name], loaded.stats[name])
    a = unit_samples(cache, 3, "conv2", n=4, seed=5)
    b = unit_samples(loaded, 3, "conv2", n=4, seed=5)
    assert all(np.array_equal(a.groups[k].sample_id, b.groups[k].sample_id) for k in a.groups)

    def killed(at):
        for i in range(0, N_SAMPLES, 6):
            if i >= at:
                raise RuntimeError("killed")
            yield images[i : i + 6], labels[i : i + 6]

    store = tmp_path / "live"
    with pytest.raises(RuntimeError, match="killed"):
        cap(model, killed(25), store=store, shard_samples=8)
    resumed = cap(model, (images, labels), store=store, shard_samples=8, batch_size=5)
    reloaded = load_cache(store, device="cpu")
    for name in cache.stats:
        assert_stats_equal(cache.stats[name], resumed.stats[name])
        assert_stats_equal(cache.stats[name], reloaded.stats[name])


def test_a_store_without_statistics_is_not_resumed_with_them(model, data, tmp_path):
    cap(model, data, store=tmp_path / "s", stats=None)
    with pytest.raises(ValueError, match="another sampling policy"):
        cap(model, data, store=tmp_path / "s")


def test_directions_are_ranked_exactly_from_the_cached_rows(model, data, cache):
    full = cap(model, data, sample="all")
    onehot = np.eye(16, dtype=np.float32)[4]
    rows = unit_samples(full, onehot, "conv2", n=5, n_top=6)
    stats = unit_samples(full, 4, "conv2", n=5, n_top=6)
    assert rows.source == "rows" and stats.source == "stats"
    assert np.array_equal(rows.groups["top"].sample_id, stats.groups["top"].sample_id)
    assert np.array_equal(rows.groups["top"].values, stats.groups["top"].values)
    d = torch.randn(16)
    s = unit_samples(full, d, "conv2", n=3, seed=0)
    la = full["conv2"]
    per_sample = torch.full((N_SAMPLES,), -np.inf).scatter_reduce(0, la.sample_id, la.acts @ d, "amax")
    assert np.allclose(s.groups["top"].values, per_sample.sort(descending=True).values[:3].numpy())
    low = s.groups["[0, 0.5]"].values
    assert len(low) == 3 and low.max() <= np.quantile(per_sample.numpy(), 0.5) + 1e-6
    assert np.array_equal(unit_samples(full, d, "conv2", seed=0).groups["random"].sample_id,
                          unit_samples(full, d, "conv2", seed=0).groups["random"].sample_id)


def test_bad_input_is_refused_with_a_clear_message(model, data, cache):
    with pytest.raises(ValueError, match="k'] must be >= 1"):
        stats_config({"k": 0})
    with pytest.raises(ValueError, match="bins'] must be between 2"):
        stats_config({"bins": 1})
    with pytest.raises(ValueError, match="bins'] must be between 2"):
        cap(model, data, stats={"bins": 100_000})
    with pytest.raises(ValueError, match="Unknown stats option"):
        stats_config({"topk": 3})
    with pytest.raises(TypeError, match="must be True, False or a dict"):
        stats_config("yes")
    with pytest.raises(ValueError, match="channel 16 is out of range"):
        unit_samples(cache, 16, "conv2")
    with pytest.raises(ValueError, match="channel 99 is out of range"):
        cache.stats["conv2"].top(99)
    with pytest.raises(ValueError, match="was not captured"):
        unit_samples(cache, 0, "fc")
    with pytest.raises(ValueError, match=r"must have shape \(16,\)"):
        unit_samples(cache, np.ones(8), "conv2")
    with pytest.raises(ValueError, match="NaN"):
        unit_samples(cache, np.full(16, np.nan), "conv2")
    with pytest.raises(ValueError, match="n must be a positive int"):
        unit_samples(cache, 0, "conv2", n=0)
    with pytest.raises(ValueError, match="0 <= qa < qb <= 1"):
        unit_samples(cache, 0, "conv2", ranges=[(0.9, 0.5)])
    plain = cap(model, data, stats=None)
    with pytest.raises(ValueError, match="no streamed statistics"):
        unit_samples(plain, 0, "conv2", source="stats")
    assert unit_samples(plain, 0, "conv2").source == "rows"  # auto falls back to the rows


def _token_outputs(seed: int = 0):
    """Text-layer outputs (B, T, C) with many exact ties (small integers) and masks padded on
    either side, in three batches."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randint(-2, 4, (30, 9, 5), generator=g).float()
    lengths = torch.randint(1, 10, (30,), generator=g)
    mask = torch.arange(9)[None] < lengths[:, None]
    mask[::2] = mask[::2].flip(1)  # every other sample left-padded
    return [(out[i : i + 10], mask[i : i + 10]) for i in range(0, 30, 10)]


def test_token_statistics_equal_the_update_of_packed_valid_tokens():
    """update_tokens (no packing) gives bit-identical statistics to update() on each sample's
    valid tokens packed to the left, ties included, and padding changes nothing."""
    fast, packed = ChannelStats(5, TOKENS_HW, **CFG), ChannelStats(5, TOKENS_HW, **CFG)
    for i, (out, mask) in enumerate(_token_outputs()):
        fast.update_tokens(out + torch.where(mask, 0.0, 99.0)[..., None], 10 * i, mask)  # loud padding
        w = int(mask.sum(1).max())
        rows = torch.zeros(len(out), w, 5)
        valid = torch.arange(w)[None] < mask.sum(1, keepdim=True)
        rows[valid] = out[mask]
        packed.update(rows.transpose(1, 2)[:, :, None, :], 10 * i, valid)
    assert_stats_equal(fast, packed)
    assert int(fast.positions.counts[0].sum()) == sum(int(m.sum()) for _, m in _token_outputs())
    with pytest.raises(ValueError, match=r"token outputs \(B, T, C\) need hw"):
        ChannelStats(5, (2, 2), **CFG).update_tokens(out, 0, mask)
    with pytest.raises(ValueError, match=r"got a token output of shape \(10, 9, 4\)"):
        fast.update_tokens(out[..., :4], 0, mask)


@pytest.mark.parametrize("waiting", [1, 40, 1 << 20])
def test_capture_statistics_do_not_depend_on_when_candidates_are_taken(waiting, monkeypatch):
    """The recorder holds per-sample maxima back and takes them later (at most _WAITING at a
    time): the result equals taking each batch's at once, across shard boundaries too."""
    def record(limit):
        monkeypatch.setattr(StatsRecorder, "_WAITING", limit)
        rec = StatsRecorder(CFG, shard_samples=12)
        for i, (out, mask) in enumerate(_token_outputs(1)):
            rec.feed("t", out, 10 * i, mask)
        for start in (0, 12, 24):
            rec.close_shard(start)
        return rec.total["t"]

    assert_stats_equal(record(waiting), record(0))  # 0: every batch taken at once


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_statistics_stay_on_the_gpu_and_match_the_cpu(model, data, truth):
    gpu = cap(model, data, batch_size=7, device="cuda")
    assert gpu.stats["conv2"].device.type == "cuda" and gpu.stats["conv2"].n_samples == N_SAMPLES
    on = {}
    for dev in ("cpu", "cuda"):  # the same values fed on each device give the same statistics
        on[dev] = ChannelStats(16, (8, 8), device=dev, **CFG)
        for i in range(0, N_SAMPLES, 9):
            on[dev].update(truth[i : i + 9].to(dev), i)
    assert_stats_equal(on["cpu"], on["cuda"])
    assert_stats_equal(on["cpu"].merge(on["cpu"].to("cpu")).to("cuda").to("cpu"),
                       on["cuda"].merge(on["cuda"]).to("cpu"))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_count_equals_bincount(dtype):
    from atlaswidgets.cache.histograms import count

    index = torch.randint(0, 50, (30, 41), generator=torch.Generator().manual_seed(1)).to(dtype)
    index[0, :5] = 49  # the last bin, and repeats
    got = count(index, 60)
    assert got.dtype == torch.int64 and torch.equal(got, torch.bincount(index.reshape(-1).long(), minlength=60))
    assert torch.equal(count(index[:0], 7), torch.zeros(7, dtype=torch.int64))
