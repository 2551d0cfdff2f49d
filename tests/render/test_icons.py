"""render_icons: batching, best of n, the on-disk store (instant second call, resume), bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atlaswidgets.render import icons as icons_mod
from atlaswidgets.render import objectives as ob
from atlaswidgets.render.fv import forward_layers, render
from atlaswidgets.render.icons import render_icons
from atlaswidgets.zoo import kitchen

LAYER = "block4"
FAST = dict(size=32, steps=4, chunk=2, seed=1, progress=False)


@pytest.fixture(scope="module")
def net():
    return kitchen.model()


@pytest.fixture(scope="module")
def dirs(net):
    """Five block4 directions: centre activations of five kitchen images."""
    images = kitchen.dataset(5, seed=2).images
    with torch.no_grad():
        out = forward_layers(net, (LAYER,), images)[LAYER]
    return ob.layer_vectors(out, "center")


def test_icons_shape_order_and_values(net, dirs):
    res = render_icons(net, LAYER, dirs, **FAST)
    assert res.icons.shape == (5, 3, 32, 32) and res.icons.dtype == torch.uint8
    assert res.direction.tolist() == [0, 1, 2, 3, 4]
    assert res.path is None and len(res) == 5
    # the reported value is the icon objective of the returned picture
    with torch.no_grad():
        out = forward_layers(net, (LAYER,), res.icons[3:4].float() / 255)[LAYER]
    h = ob.layer_vectors(out, "center")
    assert np.isclose(float(ob.icon_value(h, dirs[3])[0]), res.values[3], rtol=1e-4)
    assert torch.equal(res.of(3)[0], res.icons[3])


def test_best_of_n_keeps_the_highest_objective(net, dirs):
    res = render_icons(net, LAYER, dirs[:2], attempts=3, **FAST)
    # the same batch rendered by hand: chunk 0 uses seed 1 * 1_000_003 + 0, attempts of a
    # direction side by side
    score = ob.icon(LAYER, dirs[:2].repeat_interleave(3, dim=0))
    raw = render(net, score, size=32, steps=4, seed=1_000_003)
    best = raw.values.reshape(2, 3).max(1)
    assert np.allclose(res.values, best, rtol=1e-5)
    assert (res.values >= raw.values.reshape(2, 3).mean(1)).all()


def test_diversity_pushes_the_variants_of_a_direction_apart(net, dirs):
    kw = dict(FAST, steps=12, per_direction=2)
    plain = render_icons(net, LAYER, dirs[:1], **kw)
    diverse = render_icons(net, LAYER, dirs[:1], diversity=50.0, **kw)
    assert plain.icons.shape == (2, 3, 32, 32) and plain.direction.tolist() == [0, 0]

    def similarity(res):
        with torch.no_grad():
            out = forward_layers(net, (LAYER,), res.icons.float() / 255)
        return -float(ob.diversity(LAYER)(out)[0])

    print(f"Gram cosine of the two variants: plain {similarity(plain):.4f}, "
          f"diverse {similarity(diverse):.4f}")
    assert similarity(diverse) < similarity(plain)


def test_store_second_call_is_read_from_disk(net, dirs, tmp_path, monkeypatch):
    first = render_icons(net, LAYER, dirs, store=tmp_path, **FAST)
    path = first.path
    assert path.parent == tmp_path and path.name.startswith("icons-")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_directions"] == 5
    index = json.loads((path / "index.json").read_text())
    assert index["count"] == 5 and [e["direction"] for e in index["icons"]] == [0, 1, 2, 3, 4]
    assert not list(path.glob("chunk-*.png"))  # merged into icons.png

    def no_render(*a, **k):
        raise AssertionError("a complete store must not render again")

    monkeypatch.setattr(icons_mod, "_render_chunk", no_render)
    second = render_icons(net, LAYER, dirs, store=tmp_path, **FAST)
    assert torch.equal(second.icons, first.icons)
    assert np.array_equal(second.values, first.values)
    # other settings or directions get their own directory, never a stale answer
    with pytest.raises(AssertionError, match="must not render again"):
        render_icons(net, LAYER, dirs, store=tmp_path, **dict(FAST, steps=5))
    with pytest.raises(AssertionError, match="must not render again"):
        render_icons(net, LAYER, dirs * 2, store=tmp_path, **FAST)


def test_cell_icons_are_kept_beside_the_activation_store(net, tmp_path, monkeypatch):
    import atlaswidgets as aw

    data = kitchen.dataset(40, seed=4)
    cache = aw.capture(net, data, LAYER, progress=False)
    assert cache.path is None
    atlas = aw.build_atlas(cache, LAYER, grid_size=3, min_count=1, icon_size=8,
                           xy=cache[LAYER].acts[:, :2].numpy())
    kw = {k: v for k, v in FAST.items() if k != "chunk"}
    monkeypatch.setenv("ATLASWIDGETS_CACHE_DIR", str(tmp_path / "user"))
    in_user_cache = icons_mod.cell_icons(net, atlas, cache, **kw)
    # no activation store: built once in the user's cache folder
    assert in_user_cache.path.parent == tmp_path / "user" / "icons" == icons_mod.icon_cache_dir()
    in_memory = icons_mod.cell_icons(net, atlas, cache, store=None, **kw)
    assert in_memory.path is None  # store=None: nothing written anywhere
    assert torch.equal(in_memory.icons, in_user_cache.icons)
    store = cache.save(tmp_path / "acts")
    assert cache.path == store
    first = icons_mod.cell_icons(net, atlas, cache, **kw)
    assert first.path.parent == store and (first.path / "icons.png").is_file()
    assert torch.equal(first.icons, in_memory.icons)
    # a later session: the loaded cache knows its store, and the icons come from disk
    loaded = aw.ActivationCache.load(store, model=net, device="cpu")
    assert loaded.path == store and "stored at" in repr(loaded)

    def no_render(*a, **k):
        raise AssertionError("rendered again")

    monkeypatch.setattr(icons_mod, "_render_chunk", no_render)
    again = icons_mod.cell_icons(net, atlas, loaded, **kw)
    assert torch.equal(again.icons, first.icons)
    with pytest.raises(AssertionError, match="rendered again"):  # store=None: memory only
        icons_mod.cell_icons(net, atlas, loaded, store=None, **kw)
    assert aw.ActivationCache.load(store).to("cpu").path == store
    # the store still loads, and capture can resume into it, with the icons beside its shards
    resumed = aw.capture(net, data, LAYER, store=store, progress=False)
    assert resumed.path == store and torch.equal(resumed[LAYER].acts, cache[LAYER].acts)


def test_interrupted_run_resumes_chunk_by_chunk(net, dirs, tmp_path, monkeypatch):
    whole = render_icons(net, LAYER, dirs, store=tmp_path / "a", **FAST)
    real = icons_mod._render_chunk
    calls = []

    def stop_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(icons_mod, "_render_chunk", stop_on_second)
    with pytest.raises(KeyboardInterrupt):
        render_icons(net, LAYER, dirs, store=tmp_path / "b", **FAST)
    (path,) = (tmp_path / "b").iterdir()
    manifest = json.loads((path / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["chunks"]) == 1

    calls.clear()
    monkeypatch.setattr(icons_mod, "_render_chunk", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = render_icons(net, LAYER, dirs, store=tmp_path / "b", **FAST)
    assert len(calls) == 2  # chunks 1 and 2 of 3; chunk 0 came from disk
    assert torch.equal(resumed.icons, whole.icons)
    assert np.array_equal(resumed.values, whole.values)


def test_damaged_chunk_is_rendered_again(net, dirs, tmp_path, monkeypatch):
    real = icons_mod._render_chunk
    calls = []

    def stop_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(icons_mod, "_render_chunk", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        render_icons(net, LAYER, dirs, store=tmp_path, **FAST)
    (path,) = tmp_path.iterdir()
    (path / "chunk-00001.png").write_bytes(b"not a png")
    calls.clear()
    monkeypatch.setattr(icons_mod, "_render_chunk", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    render_icons(net, LAYER, dirs, store=tmp_path, **FAST)
    assert len(calls) == 2  # chunk 1 failed its checksum, so it and chunk 2 ran again


def test_bad_input(net, dirs):
    with pytest.raises(ValueError, match="Unknown layer 'block9'"):
        render_icons(net, "block9", dirs, **FAST)
    with pytest.raises(ValueError, match="directions must have shape \\(m, C\\), one row per icon"):
        render_icons(net, LAYER, dirs[0], **FAST)
    with pytest.raises(ValueError, match="directions have length 100 but layer 'block4' has 128 channels"):
        render_icons(net, LAYER, torch.ones(2, 100), **FAST)
    bad = dirs.clone()
    bad[1, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values \\(rows \\[1\\]\\)"):
        render_icons(net, LAYER, bad, **FAST)
    with pytest.raises(ValueError, match="size must be an int >= 8"):
        render_icons(net, LAYER, dirs, **dict(FAST, size=0))
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        render_icons(net, LAYER, dirs, **dict(FAST, chunk=0))
    with pytest.raises(ValueError, match="whiten must have shape \\(128, 128\\)"):
        render_icons(net, LAYER, dirs, whiten=torch.eye(3), **FAST)


def test_settings_object_and_old_keywords_give_the_same_icons(net, dirs, tmp_path):
    """An IconSettings and the same values as keywords render the same pixels under the same
    store key; keywords beside a settings object override its fields."""
    settings = icons_mod.IconSettings(**{k: v for k, v in FAST.items() if k != "progress"})
    by_object = render_icons(net, LAYER, dirs[:2], settings, store=tmp_path, progress=False)
    by_keywords = render_icons(net, LAYER, dirs[:2], store=tmp_path, **FAST)
    assert torch.equal(by_object.icons, by_keywords.icons)
    assert sorted(p.name for p in tmp_path.iterdir()) == [by_object.path.name]  # one key
    changed = settings.replace(seed=settings.seed + 1)
    assert changed.seed == settings.seed + 1 and settings.seed == FAST["seed"]
    over = render_icons(net, LAYER, dirs[:1], settings, seed=changed.seed, progress=False)
    again = render_icons(net, LAYER, dirs[:1], changed, progress=False)
    assert torch.equal(over.icons, again.icons)
    with pytest.raises(ValueError, match="size must be an int >= 8"):
        icons_mod.IconSettings(size=4)
    with pytest.raises(TypeError, match=r"Unknown icon setting\(s\) \['stepz'\]"):
        render_icons(net, LAYER, dirs[:1], settings, stepz=3)
    with pytest.raises(TypeError, match="icon size is required"):
        render_icons(net, LAYER, dirs[:1], steps=3)
    with pytest.raises(TypeError, match="settings must be an IconSettings"):
        render_icons(net, LAYER, dirs[:1], {"size": 64})


def test_aw_render_is_always_the_subpackage():
    import importlib
    import types

    import atlaswidgets as aw

    assert isinstance(aw.render, types.ModuleType)
    assert aw.render is importlib.import_module("atlaswidgets.render")
    assert callable(aw.feature_vis) and aw.IconSettings is icons_mod.IconSettings


@pytest.fixture
def bars(monkeypatch):
    """The shared bars the render opens, kept so a test can read their n, total and state."""
    from atlaswidgets.cache import progress as progress_mod

    made, real = [], progress_mod.progress_bar

    def keep(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(progress_mod, "progress_bar", keep)
    return made


def test_bar_counts_optimisation_steps_and_stays(net, dirs, tmp_path, capsys, bars):
    kw = dict(FAST, steps=3, size=16, chunk=1, progress=True)
    render_icons(net, LAYER, dirs[:2], **kw)  # two chunks of three steps
    (bar,) = bars
    assert (bar.n, bar.total, bar.unit, bar.leave) == (6, 6, "step", True)
    assert "icons: 100%" in capsys.readouterr().err  # drawn, and left when done

    # progress=False draws nothing; a resumed run counts only the steps it renders; a stored
    # result opens no bar
    real, calls = icons_mod._render_chunk, []

    def stop_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(icons_mod, "_render_chunk", stop_on_second)
        with pytest.raises(KeyboardInterrupt):
            render_icons(net, LAYER, dirs[:2], store=tmp_path, **dict(kw, progress=False))
    assert capsys.readouterr().err == ""
    render_icons(net, LAYER, dirs[:2], store=tmp_path, **kw)
    assert bars[1].disable and (bars[2].n, bars[2].total) == (3, 3)  # chunk 0 came from disk
    render_icons(net, LAYER, dirs[:2], store=tmp_path, **kw)
    assert len(bars) == 3
    with pytest.raises(TypeError, match="progress must be True or False"):
        render_icons(net, LAYER, dirs[:1], **dict(kw, progress="no"))
