"""Python-side latency of the Explorer's interactions, against plain queries measured in the same run.

    python bench/latency.py [--sizes 10000 100000] [--repeats 25] [--threads T] [--no-kitchen]

Two interactions, each timed from the trait change a click makes to the return of every handler it
fires (the panel's and the viewer's new traits computed, PNG sprite sheets encoded, state
serialised for the comm):

1. atlas click: ``explorer.atlas_widget.selected = [two cells]``; the linked ExamplePanel ranks and
   draws the cells' examples, and the NeuronViewer shows the direction of their mean activation
   (unit samples of the direction over every cached row, its histogram, its correlated channels).
   Baseline: ``atlas.examples(cells, k)``, the plain query behind the panel.
2. channel switch: ``explorer.viewer.show_channel(c)``; the viewer draws the channel from the
   streamed statistics and the atlas selects the cells where it is strongest (so the panel redraws
   too). Baseline: ``stats.samples(c)``, the plain streamed-statistics query behind the viewer.

Each is the median of ``--repeats`` calls on different random cells and channels, after two warm-up
calls. The browser's own redraw is not included (see tests/browser for that).

Caches: at 10k rows, the shipped kitchen model on 2,500 kitchen images (4 random positions each,
statistics streamed during capture; the viewer gets the model, so each redraw also runs it on the
~40 example images for their activation maps). At other sizes (and with --no-kitchen) a synthetic
cache: 128 ReLU channels drawn from a mixture of 64 Gaussian clusters, on a 2x2 grid, 4 positions
per sample, random 32 px images, statistics streamed with ChannelStats as capture does, and no
model (examples are outlined instead of heat-mapped). The kitchen cache is timed twice, with
and without the model, to show what the activation maps cost. Atlas layouts are a 2-D PCA, not UMAP: this
times the interactions, not the layout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from atlaswidgets.cache.cache import ActivationCache, LayerActs  # noqa: E402
from atlaswidgets.cache.topk import ChannelStats  # noqa: E402
from atlaswidgets.layout.atlas import build_atlas  # noqa: E402
from atlaswidgets.widgets.explorer import Explorer  # noqa: E402


def _pca(acts: torch.Tensor, k: int = 2) -> np.ndarray:
    x = acts.float() - acts.float().mean(0)
    # a covariance eigendecomposition: (C, C), cheap at any row count
    _, vecs = torch.linalg.eigh(x.T @ x)
    return (x @ vecs[:, -k:]).numpy().astype(np.float32)


def synthetic_cache(n_rows: int, channels: int = 128, seed: int = 0) -> tuple[ActivationCache, None]:
    """A cache of ``n_rows`` rows (4 per sample, every position of a 2x2 grid) with statistics."""
    g = torch.Generator().manual_seed(seed)
    per, hw = 4, (2, 2)
    n_samples = n_rows // per
    centers = torch.randn(64, channels, generator=g) * 1.5
    which = torch.randint(0, 64, (n_samples,), generator=g)
    # (n_samples, C, 2, 2): each sample near its cluster's centre, positions vary around it
    out = torch.relu(centers[which][:, :, None, None] + 0.7 * torch.randn(n_samples, channels, *hw, generator=g))
    stats = ChannelStats(channels, hw, seed=seed)
    for start in range(0, n_samples, 1024):  # streamed in batches, as capture feeds it
        stats.update(out[start:start + 1024], start)
    acts = out.permute(0, 2, 3, 1).reshape(n_samples * per, channels).contiguous()
    sample_id = torch.arange(n_samples).repeat_interleave(per)
    yx = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]).repeat(n_samples, 1)
    images = torch.randint(0, 256, (n_samples, 3, 32, 32), dtype=torch.uint8, generator=g)
    la = LayerActs(acts=acts, sample_id=sample_id, yx=yx, hw=hw, rf=(20, 20))
    cache = ActivationCache({"block": la}, labels=which % 6, logits=torch.zeros(n_samples, 6),
                            images=images, input_hw=(32, 32), classes=[f"class {i}" for i in range(6)],
                            stats={"block": stats})
    return cache, None


def kitchen_cache(n_rows: int):
    """The kitchen model's block4 on ``n_rows / 4`` kitchen images, statistics streamed."""
    import atlaswidgets as aw
    from atlaswidgets.zoo import kitchen

    model = kitchen.model()
    data = kitchen.dataset(n_rows // 4, seed=1)
    cache = aw.capture(model, data, "block4", per_image=4, stats=True, classes=kitchen.CLASSES, progress=False)
    return cache, model


def _median_ms(fn, args_list) -> float:
    for a in args_list[:2]:
        fn(a)  # warm-up: first-call allocations and caches
    times = []
    for a in args_list[2:]:
        t = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def bench(cache, model, repeats: int, seed: int = 0) -> dict[str, float]:
    layer = next(iter(cache.layers))
    la = cache[layer]
    atlas = build_atlas(cache, layer, grid_size=20, min_count=3, xy=_pca(la.acts), icon_size=32)
    ex = Explorer(cache, atlas=atlas, comparison=False, model=model, k=8,
                  viewer_options={"n": 6, "icons": False, "thumb_size": 64})
    rng = np.random.default_rng(seed)
    ids = atlas.cells.ids
    picks = [sorted(rng.choice(ids, 2, replace=False).tolist()) for _ in range(repeats + 2)]
    channels = rng.choice(la.n_channels, repeats + 2, replace=False).tolist()
    stats = cache.stats[layer]
    out = {}

    def click(cells):
        ex.atlas_widget.selected = cells
        if ex.viewer.error:
            raise RuntimeError(ex.viewer.error)

    out["click_ms"] = _median_ms(click, picks)
    out["examples_ms"] = _median_ms(lambda cells: atlas.examples(cells, k=8), picks)
    out["channel_ms"] = _median_ms(lambda c: ex.viewer.show_channel(int(c)), channels)
    out["stats_samples_ms"] = _median_ms(lambda c: stats.samples(int(c), n=6), channels)
    out["rows"] = la.n_rows
    out["cells"] = len(ids)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-kitchen", action="store_true", help="synthetic caches at every size")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be >= 3")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    print(f"torch threads: {torch.get_num_threads()}; medians of {args.repeats} calls")
    print(f"{'cache':<30}{'click ms':>10}{'examples ms':>13}{'ratio':>7}"
          f"{'channel ms':>12}{'samples ms':>12}{'ratio':>7}")
    for n in args.sizes:
        use_kitchen = n == 10_000 and not args.no_kitchen
        t = time.perf_counter()
        cache, model = kitchen_cache(n) if use_kitchen else synthetic_cache(n)
        build_s = time.perf_counter() - t
        # with the kitchen model the viewer also runs it for activation maps; without, boxes
        runs = ([(model, "kitchen+model"), (None, "kitchen, no model")] if use_kitchen
                else [(None, "synthetic")])
        for m, kind in runs:
            r = bench(cache, m, args.repeats)
            name = f"{kind} {r['rows']:,} rows"
            r.update(name=name, build_s=build_s)
            results.append(r)
            print(f"{name:<30}{r['click_ms']:>10.1f}{r['examples_ms']:>13.1f}{r['click_ms'] / r['examples_ms']:>7.1f}"
                  f"{r['channel_ms']:>12.1f}{r['stats_samples_ms']:>12.1f}{r['channel_ms'] / r['stats_samples_ms']:>7.1f}",
                  flush=True)
    return results


if __name__ == "__main__":
    main()
