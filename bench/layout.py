"""UMAP layout time: umap_layout's exact torch neighbours against umap-learn's own search.

    python bench/layout.py [--sizes 8000 20000] [--channels 64]

Each way runs in a fresh Python process, as a notebook's first layout does, because the cost this
is about is numba compiling umap-learn's and pynndescent's code once per process: the first fit
pays it, a second fit in the same process does not. Both ways fit the same seeded 2-D UMAP (cosine,
n_neighbors 15) of the same data, ReLU'd Gaussian clusters shaped like activations. Baseline:
``neighbors="nndescent"``, which is umap-learn's default path (pynndescent above 4,096 rows). Also
printed: how many of the exact 15 neighbours pynndescent found (its recall), from the same runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time, warnings
t0 = time.perf_counter()
import numpy as np, torch
sys.path.insert(0, {root!r})
from atlaswidgets.layout.umap import umap_layout
from atlaswidgets.layout.neighbors import exact_neighbors
n, c, how = {n}, {c}, {how!r}
g = torch.Generator().manual_seed(0)
centres = torch.randn(32, c, generator=g) * 2
x = torch.relu(centres[torch.randint(0, 32, (n,), generator=g)] + torch.randn(n, c, generator=g)).numpy()
out = {{"import_s": time.perf_counter() - t0}}
for key in ("first_s", "second_s"):
    t = time.perf_counter()
    xy = umap_layout(x, seed=0, neighbors=how)
    out[key] = time.perf_counter() - t
if how == "nndescent":
    import umap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = umap.UMAP(n_neighbors=15, metric="cosine", random_state=0).fit(x)
    idx, _ = exact_neighbors(x, 15)
    found = r._knn_indices
    out["recall"] = float(np.mean([len(set(a) & set(b)) / 15 for a, b in zip(idx, found)]))
print("RESULT" + json.dumps(out))
"""


def run(n: int, channels: int, how: str) -> dict:
    code = CHILD.format(root=str(ROOT), n=n, c=channels, how=how)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    out["process_s"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8000, 20000])
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args(argv)
    print(f"{'rows':>8} {'neighbours':<10} {'1st fit s':>10} {'2nd fit s':>10} {'recall':>7}")
    for n in args.sizes:
        base = run(n, args.channels, "nndescent")
        exact = run(n, args.channels, "exact")
        for name, r in (("nndescent", base), ("exact", exact)):
            recall = f"{r['recall']:.3f}" if "recall" in r else "1"
            print(f"{n:>8} {name:<10} {r['first_s']:>10.1f} {r['second_s']:>10.1f} {recall:>7}")
        print(f"{'':>8} ratio nndescent / exact: first fit {base['first_s'] / exact['first_s']:.2f}x, "
              f"second fit {base['second_s'] / exact['second_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
