"""Kill -9 at random moments of captures and re-saves into a store, then resume, and count.

    python bench/reliability.py [--kills 20] [--n 320] [--seed 0] [--workdir DIR]
    make reliability

On the kitchen world (``block4``, sample="random", 4 rows per image, shards of 32 samples), each
trial starts a child process that either captures into a fresh store or re-saves a complete store
over itself with another shard size, and sends it SIGKILL after a random delay drawn from the
length of that operation (measured once, uninterrupted, in this process), until that many kills
have landed before the child finished its work. Then:

- capture: ``capture(..., store=path)`` again in this process resumes the killed store;
- save: the store is loaded right after the kill (it must hold the old store or the new one),
  then the save is run again to its end.

Each result is compared with the uninterrupted run: the loaded cache tensor by tensor, the store
file by file (bit-identical: the same names and bytes). Printed: killed (the child had not
finished its work when killed), resumed, bit-identical, loadable (for a save: right after the
kill, and whether that was the old store or the new one), per kind and in total; the exit status
is 1 when any trial failed. Not part of ``make test`` (minutes: each child imports torch).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install

LAYER = "block4"
SHARD = 32  # capture's shard size; a re-save uses RESAVE_SHARD, so every file changes
RESAVE_SHARD = 48


def load_parts(data_file):
    """What the capture every trial runs needs (child and resume alike)."""
    from safetensors.torch import load_file

    from atlaswidgets.cache.capture import capture
    from atlaswidgets.zoo import kitchen

    d = load_file(data_file)
    return kitchen, capture, (kitchen.model(), d)


def run_capture(parts, path):
    kitchen, capture, (model, d) = parts
    return capture(model, (d["images"], d["labels"]), LAYER, sample="random", per_image=4,
                   classes=kitchen.CLASSES, batch_size=32, shard_samples=SHARD, progress=False,
                   store=path)


def child(kind: str, path: str, data_file: str, source: str) -> None:
    """The killed process: everything is loaded before "ready", so that the kill lands in the work."""
    if kind == "capture":
        parts = load_parts(data_file)
        print("ready", flush=True)
        run_capture(parts, path)
    else:
        from atlaswidgets.cache.store import load_cache

        cache = load_cache(source, device="cpu")
        print("ready", flush=True)
        cache.save(path, shard_samples=RESAVE_SHARD)
    print("done", flush=True)


def files_of(path: Path) -> dict[str, bytes]:
    return {n: (path / n).read_bytes() for n in sorted(os.listdir(path))}


def same_cache(a, b) -> bool:
    import torch

    if list(a.layers) != list(b.layers):
        return False
    pairs = [(a.labels, b.labels), (a.logits, b.logits), (a.images, b.images),
             (a.sample_digest, b.sample_digest)]
    for name in a.layers:
        la, lb = a.layers[name], b.layers[name]
        pairs += [(la.acts, lb.acts), (la.sample_id, lb.sample_id), (la.yx, lb.yx)]
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x.cpu(), y.cpu()))
               for x, y in pairs)


def spawn(kind: str, path: Path, data_file: Path, source: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, __file__, "--child", kind, str(path), str(data_file), str(source)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--n", type=int, default=320, help="kitchen images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temporary directory)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from safetensors.torch import save_file

    from atlaswidgets.cache.store import load_cache, read_manifest
    from atlaswidgets.zoo import kitchen

    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="atlaswidgets-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    data = kitchen.dataset(args.n, seed=1)
    data_file = work / "data.safetensors"
    save_file({"images": data.images.contiguous(), "labels": data.labels.contiguous()}, data_file)

    # the uninterrupted runs every trial is compared with, and how long each takes
    parts = load_parts(data_file)
    t0 = time.perf_counter()
    reference = run_capture(parts, work / "reference")
    t_capture = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference.save(work / "reference-resaved", shard_samples=RESAVE_SHARD)
    t_save = time.perf_counter() - t0
    ref_capture, ref_save = files_of(work / "reference"), files_of(work / "reference-resaved")
    print(f"reliability: {args.kills} kill -9s on the kitchen world ({args.n} images, {LAYER}, shards of "
          f"{SHARD}), seed {args.seed}; uninterrupted: capture {t_capture:.2f} s, save {t_save:.2f} s",
          flush=True)

    counts = {k: dict(trials=0, killed=0, resumed=0, identical=0, loadable=0, old=0, new=0)
              for k in ("capture", "save")}
    failures = []
    trial = 0
    # trials go on until that many kills landed in the work (a child that finished first is
    # checked as well, but is no kill); the delays are drawn from the uninterrupted run's length
    while sum(c["killed"] for c in counts.values()) < args.kills and trial < 3 * args.kills:
        trial += 1
        kind = rng.choice(["capture", "save"])
        delay = rng.uniform(0, t_capture if kind == "capture" else t_save)
        path = work / f"trial-{trial:02d}"
        if kind == "save":
            shutil.copytree(work / "reference", path)
        proc = spawn(kind, path, data_file, work / "reference")
        if proc.stdout.readline().strip() != "ready":
            proc.wait()
            failures.append(f"trial {trial}: the child failed before its work (exit {proc.returncode})")
            continue
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = "done" not in proc.stdout.read()  # else the work was over, only the exit was killed
        c = counts[kind]
        c["trials"] += 1
        c["killed"] += killed
        note = f"trial {trial:2d}: {kind:7s} killed at {delay:6.3f} s" if killed else \
            f"trial {trial:2d}: {kind:7s} finished before the kill at {delay:.3f} s"
        try:
            if kind == "save":  # the store must be whole right after the kill: old or new
                after = load_cache(path, device="cpu")
                if not same_cache(after, reference):
                    raise AssertionError("the store loaded after the kill holds other data")
                c["loadable"] += 1
                step = read_manifest(path)["shards"][0]["stop"]
                c["new" if step == RESAVE_SHARD else "old"] += 1
                reference.save(path, shard_samples=RESAVE_SHARD)
                want = ref_save
            else:
                run_capture(parts, path)
                want = ref_capture
            c["resumed"] += 1
            if kind == "capture":
                if not same_cache(load_cache(path, device="cpu"), reference):
                    raise AssertionError("the resumed store loads other data")
                c["loadable"] += 1
            leftovers = sorted(n for n in os.listdir(work) if n.startswith(f".{path.name}."))
            if files_of(path) == want and not leftovers:
                c["identical"] += 1
            else:
                raise AssertionError(f"files differ from the uninterrupted run (leftovers {leftovers})")
            print(note + ": ok", flush=True)
        except Exception as e:  # noqa: BLE001 - a bench counts every failure, whatever its kind
            failures.append(f"{note}: {type(e).__name__}: {e}")
            print(failures[-1], flush=True)
        shutil.rmtree(path, ignore_errors=True)

    total = {k: sum(c[k] for c in counts.values()) for k in counts["capture"]}
    for name, c in [*counts.items(), ("total", total)]:
        after = f"  (right after the kill: old store {c['old']}, new store {c['new']})" if name == "save" else ""
        print(f"{name:8s} trials {c['trials']:2d}  killed {c['killed']:2d}  resumed {c['resumed']:2d}  "
              f"bit-identical {c['identical']:2d}  loadable {c['loadable']:2d}{after}")
    for f in failures:
        print("FAILED", f)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
