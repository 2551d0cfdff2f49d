"""Patch attacks: paste a picture in a corner of images and count how often the model changes its mind.

The Activation Atlases article (Carter et al. 2019) found in a comparison atlas that noodles push
a model from frying pan to wok, then pasted a noodles patch in a corner of frying-pan photos: the
prediction flipped to wok for 44.9% of them with the best corner and size per image ("dynamic"),
25.6% at one fixed placement ("static"), against 18.3% / 4.6% for a random-noise patch.
``patch_attack`` runs that experiment for any model, images and patches, always with the
random-noise control, and returns a ``PatchTable``. ``atlaswidgets.experiments.cells`` turns an
atlas cell into a patch, so that discovery -> attack is one step.

A placement is a (corner, size) pair: the patch is resized (antialiased) to ``size`` x ``size``
pixels and pasted with its corner on the image's corner.
"""

from __future__ import annotations

import difflib
import html
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cache.targets import class_id, class_name, resolve
from ..cache.hooks import eval_mode, model_dtype, on_device
from ..cache.checks import int_at_least, is_int, random_seed
from ..cache.data import logits_of
from ..cache.progress import checked_progress, progress_bar

__all__ = ["patch_attack", "PatchTable", "paste", "CORNERS", "NOISE"]

CORNERS = ("top left", "top right", "bottom left", "bottom right")
NOISE = "random noise"  # name of the control row
# default patch sides as fractions of the image side: 16, 20 and 24 px at 64 px
_SIZE_FRACTIONS = (0.25, 0.3125, 0.375)


# ----------------------------------------------------------------------------- the table


@dataclass(repr=False)
class PatchTable:
    """The result of ``patch_attack``: one row per patch, the random-noise control last.

    Attributes
    ----------
    rows : list of dicts, one per patch, with keys ``patch``, ``n_images``, ``dynamic_flips``,
        ``dynamic_rate``, ``static_flips``, ``static_rate``, ``static_corner``, ``static_size``,
        ``static_pinned`` (True when ``static=`` fixed it, False when it is the patch's best),
        ``dynamic_dprob`` (mean over images of the largest target-probability gain over all
        placements) and ``static_dprob`` (mean gain at the static placement)
    source, target : class names (``source`` is None when not given)
    placements : list of (corner, size) tried, in the column order of ``hits``
    image_index : int64 array, shape (n_images,), which of the input images were counted
    hits : dict patch name -> bool tensor, shape (n_images, n_placements): prediction is target
    gain : dict patch name -> float32 tensor, shape (n_images, n_placements): target probability
        after pasting minus before
    patches : dict patch name -> float tensor, shape (3, s, s), the patches as given (noise: the
        largest size)
    """

    rows: list[dict]
    source: str | None
    target: str
    placements: list[tuple[str, int]]
    image_index: np.ndarray
    hits: dict[str, torch.Tensor] = field(default_factory=dict)
    gain: dict[str, torch.Tensor] = field(default_factory=dict)
    patches: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Patch names in row order (the control last)."""
        return [r["patch"] for r in self.rows]

    def row(self, name: str) -> dict:
        """The row of one patch."""
        return self.rows[self.names.index(self._known(name))]

    def flipped(self, name: str) -> np.ndarray:
        """Indices into the input ``images`` of the images this patch flipped (any placement).

        Returns int64 array, shape (k,), ascending; ``images[table.flipped("noodles")]`` shows them.
        """
        hit = self.hits[self._known(name)].any(1).cpu().numpy()
        return self.image_index[hit]

    def placement_rates(self, name: str) -> dict[tuple[str, int], float]:
        """Flip rate of one patch at each placement, keyed (corner, size)."""
        rates = self.hits[self._known(name)].double().mean(0).tolist()
        return dict(zip(self.placements, rates))

    def best_placement(self, name: str) -> list[tuple[str, int] | None]:
        """Per counted image, the placement that raised the target probability most if it
        flipped the image, else None; aligned with ``image_index``."""
        name = self._known(name)
        hit, gain = self.hits[name], self.gain[name]
        # among flipping placements only: the gain of the others is masked out
        best = torch.where(hit, gain, torch.full_like(gain, -np.inf)).argmax(1).tolist()
        return [self.placements[b] if h else None for b, h in zip(best, hit.any(1).tolist())]

    def _known(self, name: str) -> str:
        if name not in self.hits:
            close = difflib.get_close_matches(str(name), self.names, n=3, cutoff=0.5)
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(f"No patch called {name!r} in this table.{hint} It has {self.names}.")
        return name

    # ---- display

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        head = ["patch", "images", "dynamic", "static", "static placement", "Δp dynamic",
                "Δp static"]
        body = []
        for r in self.rows:
            how = "pinned" if r["static_pinned"] else "best"
            body.append([
                r["patch"], str(r["n_images"]),
                f"{r['dynamic_flips']} ({100 * r['dynamic_rate']:.1f}%)",
                f"{r['static_flips']} ({100 * r['static_rate']:.1f}%)",
                f"{r['static_corner']}, {r['static_size']} px ({how})",
                f"{r['dynamic_dprob']:+.3f}", f"{r['static_dprob']:+.3f}",
            ])
        return head, body

    def _title(self) -> str:
        src = self.source if self.source is not None else "any class"
        sizes = sorted({s for _, s in self.placements})
        corners = list(dict.fromkeys(c for c, _ in self.placements))
        return (f"Patch attack {src} -> {self.target}: {len(self.image_index)} images, "
                f"{len(corners)} corner(s) x sizes {sizes} px")

    def __repr__(self) -> str:
        head, body = self._cells()
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        # the patch name is left-aligned, numbers right-aligned
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))) for row in [head, *body]]
        return "\n".join([self._title(), *lines])

    def _repr_html_(self) -> str:
        head, body = self._cells()
        esc = html.escape
        th = "".join(f"<th>{esc(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
        return (f"<div><p>{esc(self._title())}</p><table><thead><tr>{th}</tr></thead>"
                f"<tbody>{trs}</tbody></table></div>")

    def to_pandas(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("PatchTable.to_pandas() needs pandas: pip install pandas "
                              "(or read table.rows, a list of dicts).") from err
        return pd.DataFrame(self.rows)

    def figure(self, reference_rates: Mapping[str, Any] | None = None, *,
               reference: Mapping[str, Any] | None = None):
        """Grouped bars of the dynamic and static flip rates per patch, as a plotly Figure.

        The bars are drawn in percent (a 0-100 axis); every number passed in is a rate, a fraction
        in [0, 1], like the table's own ``dynamic_rate`` and ``static_rate``.

        reference_rates : optional published rates drawn beside, hatched, as
            {name: (dynamic rate, static rate)} or {name: {"dynamic": rate, "static": rate}}, e.g.
            the article's ``{"noodles (article)": (0.449, 0.256), "random noise (article)":
            (0.183, 0.046)}``. A value above 1 is refused (a percentage passed as a rate).
        reference : deprecated, the same in percent (44.9 for 44.9%); warns, and refuses values
            that all look like rates (<= 1), which it would draw at under 1%.
        """
        import plotly.graph_objects as go

        if reference is not None:
            if reference_rates is not None:
                raise TypeError("Pass reference_rates= (rates in [0, 1]) or the deprecated "
                                "reference= (percent), not both.")
            ref = _reference(reference, percent=True)
        else:
            ref = _reference(reference_rates, percent=False)
        # plotly reads a subset of HTML in every label (<b>, <a href>, <br>); names come from the
        # user and class names from data, so they are escaped to show as the text they are
        names = [_plain(n) for n in self.names]
        fig = go.Figure()
        colors = {"dynamic": "#1f77b4", "static": "#ff7f0e"}
        for mode in ("dynamic", "static"):
            fig.add_bar(
                name=mode, x=names, y=[100 * r[f"{mode}_rate"] for r in self.rows],
                offsetgroup=mode, marker_color=colors[mode],
                customdata=[[r[f"{mode}_flips"], r["n_images"]] for r in self.rows],
                hovertemplate="%{x}: %{y:.1f}% (%{customdata[0]} of %{customdata[1]})"
                              f"<extra>{mode}</extra>",
            )
        if ref:
            for k, mode in enumerate(("dynamic", "static")):
                fig.add_bar(
                    name=f"{mode} (reference)", x=[_plain(n) for n in ref], y=[100 * v[k] for v in ref.values()],
                    offsetgroup=mode, marker_color=colors[mode], opacity=0.45,
                    marker_pattern_shape="/",
                    hovertemplate=f"%{{x}}: %{{y:.1f}}%<extra>{mode}, reference</extra>",
                )
        fig.update_layout(
            barmode="group", title=_plain(self._title()), yaxis_title=_plain(f"flipped to {self.target} (%)"),
            yaxis_range=[0, 100], legend_title_text="placement",
        )
        return fig


def _plain(text: str) -> str:
    """``text`` for a plotly label: its markup characters as entities, shown as typed."""
    return html.escape(str(text), quote=False)


def _reference(reference, percent: bool) -> dict[str, tuple[float, float]]:
    """{name: (dynamic rate, static rate)} in [0, 1], from rates or (``percent``) percentages."""
    arg = "reference" if percent else "reference_rates"
    if reference is None:
        return {}
    if not isinstance(reference, Mapping):
        raise TypeError(f"{arg} must be a dict {{name: (dynamic rate, static rate)}}, got "
                        f"{type(reference).__name__}.")
    top = 100.0 if percent else 1.0
    out = {}
    for name, value in reference.items():
        if isinstance(value, Mapping):
            value = (value.get("dynamic"), value.get("static"))
        try:
            pair = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            pair = ()
        if len(pair) != 2 or not all(np.isfinite(v) and v >= 0 for v in pair):
            raise ValueError(f"{arg}[{name!r}] must be two rates (dynamic, static), e.g. "
                             f"(0.449, 0.256) for 44.9% and 25.6%; got {value!r}.")
        if max(pair) > top:
            if percent:
                raise ValueError(f"reference[{name!r}] = {value!r}: percentages are at most 100.")
            raise ValueError(f"reference_rates[{name!r}] = {value!r} looks like percentages; rates "
                             f"are fractions in [0, 1]: pass {tuple(round(v / 100, 6) for v in pair)}.")
        out[str(name)] = pair
    if percent:
        if out and max(max(p) for p in out.values()) <= 1:
            raise ValueError(f"reference= takes percentages, and {reference!r} are all <= 1%: "
                             "they look like rates. Pass them as reference_rates= instead.")
        warnings.warn("figure(reference=...) in percent is deprecated; pass rates in [0, 1] as "
                      "figure(reference_rates=...), the unit of the table's dynamic_rate.",
                      FutureWarning, stacklevel=3)
        out = {k: (a / 100, b / 100) for k, (a, b) in out.items()}
    return out


# ----------------------------------------------------------------------------- pasting


def paste(images: torch.Tensor, patch: torch.Tensor, corner: str) -> torch.Tensor:
    """Copies of ``images`` with ``patch`` pasted in one corner.

    images : tensor, shape (n, C, H, W)
    patch : tensor, shape (C, s, s) with s <= H, W, same dtype space as the images
    corner : one of ``CORNERS``
    Returns a new tensor, shape (n, C, H, W).
    """
    if corner not in CORNERS:
        raise ValueError(f"Unknown corner {corner!r}; use one of {CORNERS}.")
    s = patch.shape[-1]
    out = images.clone()
    y = 0 if corner.startswith("top") else images.shape[-2] - s
    x = 0 if corner.endswith("left") else images.shape[-1] - s
    out[:, :, y:y + s, x:x + s] = patch.to(out.device, out.dtype)
    return out


def _resized(patch: torch.Tensor, size: int) -> torch.Tensor:
    """(C, s, s) -> (C, size, size), bilinear, antialiased when shrinking."""
    if patch.shape[-1] == size:
        return patch
    x = F.interpolate(patch[None].float(), size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    return x[0].to(patch.dtype)


# ----------------------------------------------------------------------------- the attack


def patch_attack(
    model: nn.Module,
    images: torch.Tensor,
    patches: Any,
    target: int | str,
    *,
    source: int | str | None = None,
    labels: Any = None,
    classes: Sequence[str] | None = None,
    corners: Sequence[str] = CORNERS,
    sizes: Sequence[int] | None = None,
    static: tuple[str, int] | None = None,
    noise_seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> PatchTable:
    """Paste each patch at every corner and size, and count how many images flip to ``target``.

    Parameters
    ----------
    model : classifier; its output is logits (N, n_classes) (or (logits, ...) / ``.logits``)
    images : float tensor, shape (n, C, H, W), in the model's input space (RGB in [0, 1] for the
        kitchen model)
    patches : one tensor (C, s, s), a stack (k, C, s, s), a list of (C, s, s), or a dict
        name -> (C, s, s); float in the images' space, or uint8 (divided by 255). Square.
    target : class id or name the attack tries to reach
    source : class id or name of the images; only images the model predicts as ``source``
        before pasting count. None: every image not already predicted as ``target`` counts
        (with ``labels``: every correctly classified image not labelled ``target``)
    labels : int array-like, shape (n,), optional; with ``source``, all must equal it
    classes : class names indexed by id; default ``model.classes`` when the model has one
    corners : subset of ``CORNERS``
    sizes : patch sides in pixels, 1 <= size <= min(H, W); default 1/4, 5/16 and 3/8 of the
        image side (16, 20, 24 at 64 px)
    static : (corner, size), one of the tried placements, for the "static" columns; default
        per patch the placement that flips the most images
    noise_seed : seed of the random-noise control (one uniform noise patch per size)
    batch_size, device : forward passes run ``batch_size`` images at a time on ``device``
        (default: CUDA when available, else where the model is; see ``aw.capture``)
    progress : True shows a bar over the pasted images (every counted image, once per patch and
        placement, the noise control included), as ``aw.capture`` does; False hides it

    Returns
    -------
    PatchTable, one row per patch and the "random noise" control row last
    """
    x = _check_images(images)
    n, c, h, w = x.shape
    named = _named_patches(patches, c)
    corners = _check_corners(corners)
    sizes = _check_sizes(sizes, h, w)
    placements = [(corner, s) for s in sizes for corner in corners]
    static_at = None
    if static is not None:
        if not isinstance(static, (tuple, list)) or len(static) != 2 or tuple(static) not in placements:
            raise ValueError(f"static must be one of the tried placements (corner, size), e.g. "
                             f"{placements[0]!r}; got {static!r}. corners={list(corners)}, "
                             f"sizes={sizes}.")
        static_at = placements.index(tuple(static))
    int_at_least(batch_size, "batch_size", 1)
    random_seed(noise_seed, "noise_seed")
    checked_progress(progress)
    if classes is None:
        classes = getattr(model, "classes", None)
    classes = list(classes) if classes is not None else None
    tgt = resolve(target, classes, None).ids[0]
    src = None if source is None else class_id(source, classes, None)
    if src == tgt:
        raise ValueError(f"source and target are the same class ({class_name(tgt, classes)!r}); a "
                         "patch attack needs two different classes.")
    lab = _check_labels(labels, n, src, classes)

    x = x.to(model_dtype(model) or x.dtype)  # a half-precision model gets half-precision images
    with on_device(model, device) as dev, eval_mode(model), torch.no_grad():
        probs0 = _probs(model, x, dev, batch_size)
        n_out = probs0.shape[1]
        for cid in (tgt, src):
            if cid is not None and cid >= n_out:
                raise ValueError(f"Class id {cid} is out of range; the model has {n_out} "
                                 f"outputs, so use 0..{n_out - 1}.")
        keep = _counted(probs0.argmax(1), lab, src, tgt, classes)
        xk = x[torch.as_tensor(keep)]
        p0 = probs0[torch.as_tensor(keep), tgt]
        named[NOISE] = _noise(x, c, sizes, noise_seed)
        with progress_bar("patch attack", len(keep) * len(named) * len(placements), "img",
                          progress) as bar:
            hits, gain = _run(model, xk, p0, named, placements, tgt, dev, batch_size, bar.update)

    rows = [_row(name, hits[name], gain[name], placements, static_at) for name in named]
    originals = {k: (v[max(v)] if isinstance(v, dict) else v) for k, v in named.items()}
    return PatchTable(
        rows=rows, source=None if src is None else class_name(src, classes), target=class_name(tgt, classes),
        placements=placements, image_index=keep, hits=hits, gain=gain, patches=originals,
    )


def _probs(model, x, dev, batch_size) -> torch.Tensor:
    """Softmax of the model's logits on x, shape (n, n_classes), float32 on the CPU."""
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(dev)
        out.append(logits_of(model(xb), len(xb)).softmax(1).cpu())
    return torch.cat(out)


def _run(model, xk, p0, named, placements, tgt, dev, batch_size, on_images):
    """hits and gains per patch, each (n, n_placements); one forward per (batch, placement).

    named : name -> patch (C, s, s), resized to each size, or {size: patch} (the noise control)
    on_images : called with the number of images of each forward pass (a progress bar's update)
    """
    n, k = len(xk), len(placements)
    hits = {name: torch.zeros(n, k, dtype=torch.bool) for name in named}
    gain = {name: torch.zeros(n, k, dtype=torch.float32) for name in named}
    # every size of every patch, resized once and moved to the device once
    sized = {name: {s: (p[s] if isinstance(p, dict) else _resized(p, s)).to(dev, xk.dtype)
                    for s in sorted({s for _, s in placements})}
             for name, p in named.items()}
    for start in range(0, n, batch_size):
        xb = xk[start:start + batch_size].to(dev)
        pb = p0[start:start + batch_size]
        stop = start + len(xb)
        for name in named:
            for j, (corner, s) in enumerate(placements):
                probs = logits_of(model(paste(xb, sized[name][s], corner)), len(xb)).softmax(1)
                probs = probs.cpu()
                hits[name][start:stop, j] = probs.argmax(1) == tgt
                gain[name][start:stop, j] = probs[:, tgt] - pb
                on_images(len(xb))
    return hits, gain


def _row(name, hit, gain, placements, static_at) -> dict:
    n = hit.shape[0]
    pinned = static_at is not None
    if not pinned:
        static_at = int(hit.sum(0).argmax())  # first placement among ties: corner order, size order
    dyn = int(hit.any(1).sum())
    stat = int(hit[:, static_at].sum())
    corner, size = placements[static_at]
    return {
        "patch": name, "n_images": n,
        "dynamic_flips": dyn, "dynamic_rate": dyn / n,
        "static_flips": stat, "static_rate": stat / n,
        "static_corner": corner, "static_size": int(size), "static_pinned": pinned,
        "dynamic_dprob": float(gain.max(1).values.mean()),
        "static_dprob": float(gain[:, static_at].mean()),
    }


def _noise(x: torch.Tensor, c: int, sizes: list[int], seed: int) -> dict[int, torch.Tensor]:
    """One uniform noise patch per size, {size: (c, size, size)}: over [0, 1] when the images lie
    there, else over their value range (so the control stays in the space of normalised inputs)."""
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    gen = torch.Generator().manual_seed(int(seed))
    return {s: lo + (hi - lo) * torch.rand(c, s, s, generator=gen) for s in sizes}


# ----------------------------------------------------------------------------- input checks


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a float tensor (n, 3, H, W), got {type(images).__name__}; "
                        "convert with torch.as_tensor(...).float().")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor in the model's input space, got "
                        f"{images.dtype}; for uint8 pictures use images.float() / 255.")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, C, H, W), got {tuple(images.shape)}; a single "
                         "image (C, H, W) becomes a batch with images[None].")
    if images.shape[0] == 0:
        raise ValueError("images is empty (n = 0); pass at least one image.")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values.")
    return images.detach()


def _one_patch(p, where: str, channels: int) -> torch.Tensor:
    if isinstance(p, np.ndarray):
        p = torch.from_numpy(p)
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where} must be a tensor (C, s, s), got {type(p).__name__}.")
    if p.ndim != 3 or p.shape[0] != channels or p.shape[1] != p.shape[2]:
        raise ValueError(f"{where} must have shape ({channels}, s, s), square with the images' "
                         f"{channels} channels; got {tuple(p.shape)}. Crop it square first.")
    if p.shape[1] < 1:
        raise ValueError(f"{where} is empty ({tuple(p.shape)}).")
    if p.dtype == torch.uint8:
        p = p.float() / 255.0
    elif not p.is_floating_point():
        raise TypeError(f"{where} must be float (in the images' space) or uint8, got {p.dtype}.")
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"{where} contains NaN or infinite values.")
    return p.detach().cpu()


def _named_patches(patches, channels: int) -> dict:
    """{name: float tensor (C, s, s)} in the order given."""
    if isinstance(patches, Mapping):
        items = list(patches.items())
        for name, _ in items:
            if not isinstance(name, str) or not name:
                raise TypeError(f"patch names must be non-empty str, got {name!r}.")
    elif isinstance(patches, (torch.Tensor, np.ndarray)) and patches.ndim == 3:
        items = [("patch", patches)]
    elif isinstance(patches, (torch.Tensor, np.ndarray)) and patches.ndim == 4:
        items = [(f"patch {i}", p) for i, p in enumerate(patches)]
    elif isinstance(patches, (list, tuple)):
        items = [(f"patch {i}", p) for i, p in enumerate(patches)]
    elif isinstance(patches, (torch.Tensor, np.ndarray)):
        raise ValueError(f"patches must have shape ({channels}, s, s) or (k, {channels}, s, s), "
                         f"got {tuple(patches.shape)}.")
    else:
        raise TypeError("patches must be a tensor (C, s, s), a stack (k, C, s, s), a list of them "
                        f"or a dict name -> tensor; got {type(patches).__name__}.")
    if not items:
        raise ValueError("patches is empty; pass at least one patch (the noise control is added "
                         "by patch_attack itself).")
    if any(name == NOISE for name, _ in items):
        raise ValueError(f"{NOISE!r} is the name of the control row; call your patch otherwise.")
    return {name: _one_patch(p, f"patch {name!r}", channels) for name, p in items}


def _check_corners(corners) -> list[str]:
    if isinstance(corners, str):
        corners = (corners,)
    corners = list(corners)
    if not corners:
        raise ValueError(f"corners is empty; use some of {CORNERS}.")
    for corner in corners:
        if corner not in CORNERS:
            close = difflib.get_close_matches(str(corner), CORNERS, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown corner {corner!r}.{hint} Use some of {CORNERS}.")
    return list(dict.fromkeys(corners))


def _check_sizes(sizes, h: int, w: int) -> list[int]:
    side = min(h, w)
    if sizes is None:
        sizes = sorted({max(1, round(side * f)) for f in _SIZE_FRACTIONS})
    elif is_int(sizes):
        sizes = [sizes]
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes is empty; pass patch sides in pixels, e.g. sizes=(16, 20, 24).")
    for s in sizes:
        if not is_int(s):
            raise TypeError(f"sizes must be ints (pixels), got {s!r}.")
        if s < 1:
            raise ValueError(f"Patch size {s} is too small; sizes must be >= 1 pixel.")
        if s > side:
            raise ValueError(f"Patch size {s} is bigger than the images ({h}x{w}); use sizes of at "
                             f"most {side} pixels.")
    return sorted({int(s) for s in sizes})


def _check_labels(labels, n: int, src: int | None, classes) -> np.ndarray | None:
    if labels is None:
        return None
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.shape != (n,) or (lab.size and not np.issubdtype(lab.dtype, np.integer)):
        raise ValueError(f"labels must be integer class ids, shape ({n},), one per image; got "
                         f"{lab.dtype} {lab.shape}.")
    if src is not None:
        wrong = int((lab != src).sum())
        if wrong:
            name = class_name(src, classes)
            raise ValueError(f"{wrong} of {n} images are not labelled {name!r} (class {src}); a "
                             f"patch attack from {name!r} needs images of that class only. Select "
                             f"them with images[labels == {src}].")
    return lab.astype(np.int64)


def _counted(preds: torch.Tensor, lab, src, tgt, classes) -> np.ndarray:
    """Indices of the images that count: predicted as source before pasting (see patch_attack)."""
    pred = preds.numpy()
    if src is not None:
        keep = pred == src
        why = f"the model predicts {class_name(src, classes)!r} for none of them before patching"
    elif lab is not None:
        keep = (pred == lab) & (lab != tgt)
        why = (f"none is both correctly classified and not labelled {class_name(tgt, classes)!r}")
    else:
        keep = pred != tgt
        why = f"the model already predicts {class_name(tgt, classes)!r} for all of them"
    if not keep.any():
        raise ValueError(f"No image left to attack: of {len(pred)} images, {why}. Pass images the "
                         "model classifies correctly (e.g. images[model(images).argmax(1) == "
                         "source]).")
    return np.flatnonzero(keep).astype(np.int64)
