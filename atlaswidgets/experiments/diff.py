"""Model diffing: what one model's layer represents that another's, on the same data, does not.

Both models see the same images and are captured at the same sampled positions, so row i of
model a's layer and row i of model b's layer look at the same place of the same image::

    d = aw.diff_models(base, variant, data, "block4", names=("base", "variant"))
    d.summary()                  # per layer: linear CKA and held-out R^2 both ways
    d.novelty("block4")          # per row: the share of b's activation a cannot explain
    d.class_shift("block4")      # which classes' attributions moved most, most moved first
    d.atlas("block4")            # b's layer as an atlas whose cells are scored by novelty

Alignment. Per layer, a ridge regression maps a's activations to b's (and b's to a's). It is
cross-fitted: the samples are split into ``folds`` groups, and each group's rows are predicted
by a map fitted on the other groups, so every prediction is out of sample and a map cannot
memorise a rare feature from the very rows it is asked to explain. Folds split samples, not
rows, because positions of one image share most of their receptive field. The ridge penalty is
``alpha`` times the mean variance of a's channels (scale-free). The default 0.01 is light: on the
kitchen variants a heavier one (1, 10) left more of every row unexplained, common features too,
and lowered each planted cue's enrichment among the 10% most novel rows; the cross-fitting, not
the penalty, is what keeps a rare feature from being explained.

Novelty of row i of b given a (``direction="b"``)::

    novelty_i = clip(|b_i - b^_i|^2 / (|b_i - mean(b)|^2 + floor), 0, 1)

the residual energy of the row's centred activation, as a share of that energy. ``floor`` is
``floor_share`` times the median row energy: without it, rows with almost no activation (plain
background after a ReLU) get noisy ratios near 1 from tiny residuals, and those rows would fill
the top of the ranking. With it, a row must carry a fair amount of energy its partner cannot
explain to score high. The clip keeps out-of-sample overshoots (a residual larger than the row
itself) at 1.

Class shift. For every class the layer's activations are attributed to the class logit
(activation x gradient, as ``aw.attribute``) in both models, on the same rows, and summed over
channels: the row's first-order share of the logit, in logit units, so the two models' numbers
are comparable even when their channels are not. Classes are ranked by the mean change of that
attribution over b's most novel rows: where b's representation is new, which class did it start
arguing for. (The mean |change| over all rows does not single a flaw out: fine-tuning moves every
class a little everywhere.)
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..attribution import attribute
from ..cache.cache import ActivationCache
from ..cache.capture import capture
from ..cache.checks import int_at_least, number
from ..cache.data import batches, check_batch
from ..cache.hooks import LayerSpec, as_model_input, eval_mode, hooks, model_device, resolve_layers
from ..cache.sampling import LIST_HINT
from ..cache.targets import Target, class_name, find_stored, model_classes
from .align import Alignment, align, linear_cka, novelty_of

__all__ = ["diff_models", "ModelDiff", "DiffTable", "Alignment", "align", "linear_cka",
           "novelty_of"]

DIRECTIONS = ("a", "b")


# ----------------------------------------------------------------------------- tables


@dataclass
class DiffTable:
    """A small result table: a title, column names and one dict per row.

    ``repr`` prints aligned text, ``_repr_html_`` an HTML table whose every cell (class and model
    names included) is escaped text, ``to_pandas()`` a DataFrame.
    """

    title: str
    columns: list[str]
    rows: list[dict]
    formats: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def column(self, name: str) -> list:
        """The values of one column, in row order."""
        if name not in self.columns:
            raise ValueError(f"No column {name!r}; the columns are {self.columns}.")
        return [r[name] for r in self.rows]

    def _text(self, row: dict, col: str) -> str:
        value = row[col]
        fmt = self.formats.get(col)
        return format(value, fmt) if fmt and isinstance(value, (int, float)) else str(value)

    def __repr__(self) -> str:
        body = [[self._text(r, c) for c in self.columns] for r in self.rows]
        widths = [max(len(x) for x in col) for col in zip(self.columns, *body)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(line, widths)))
                 for line in [self.columns, *body]]
        return "\n".join([self.title, *lines])

    def _repr_html_(self) -> str:
        esc = html.escape
        th = "".join(f"<th>{esc(c)}</th>" for c in self.columns)
        trs = "".join("<tr>" + "".join(f"<td>{esc(self._text(r, c))}</td>" for c in self.columns)
                      + "</tr>" for r in self.rows)
        return (f"<div><p>{esc(self.title)}</p><table><thead><tr>{th}</tr></thead>"
                f"<tbody>{trs}</tbody></table></div>")

    def to_pandas(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("DiffTable.to_pandas() needs pandas: pip install pandas "
                              "(or read table.rows, a list of dicts).") from err
        return pd.DataFrame(self.rows, columns=self.columns)


# ----------------------------------------------------------------------------- the diff


@dataclass(repr=False)
class ModelDiff:
    """Two models captured on the same data at the same positions, and their comparison.

    Attributes
    ----------
    model_a, model_b : the two models (references, not copies)
    data : the data both saw (kept for the attributions of ``class_shift``)
    cache_a, cache_b : ActivationCache of each model; row i of a layer is the same sample and
        position in both
    layers : list of layer names, in both models
    names : (name of a, name of b), shown as text
    folds, alpha, floor_share, seed : settings of the alignment (see the module doc)
    """

    model_a: nn.Module
    model_b: nn.Module
    data: Any
    cache_a: ActivationCache
    cache_b: ActivationCache
    layers: list[str]
    names: tuple[str, str]
    folds: int = 5
    alpha: float = 0.01
    floor_share: float = 1.0
    seed: int = 0
    batch_size: int = 64
    _aligned: dict[str, Alignment] = field(default_factory=dict)

    def __post_init__(self):
        _check_settings(self.folds, self.alpha, self.floor_share, self.batch_size)

    def __repr__(self) -> str:
        a, b = self.names
        return (f"ModelDiff({a!r} vs {b!r}, layers={self.layers}, samples={self.cache_a.n_samples}, "
                f"rows per layer={[self.cache_a[n].n_rows for n in self.layers]})")

    @classmethod
    def from_caches(cls, model_a: nn.Module, model_b: nn.Module, data: Any,
                    cache_a: ActivationCache, cache_b: ActivationCache,
                    names: Sequence[str] = ("a", "b"), layers: Sequence[str] | None = None,
                    **settings) -> "ModelDiff":
        """A diff of two captures already made (``aw.capture(..., sample="random")`` of both
        models on ``data`` with the same ``per_image`` and ``seed``), e.g. to diff one base model
        against several variants with one capture of the base. Checks that the rows align.

        layers : default every layer both caches hold
        settings : ``folds``, ``alpha``, ``floor_share``, ``seed``, ``batch_size`` (see
            ``diff_models``)
        """
        for label, c in (("cache_a", cache_a), ("cache_b", cache_b)):
            if not isinstance(c, ActivationCache):
                raise TypeError(f"{label} must be an ActivationCache, got {type(c).__name__}.")
        names = _checked_names(names)
        if layers is None:
            layers = [n for n in cache_a.layers if n in cache_b.layers]
        layers = [layers] if isinstance(layers, str) else list(layers)
        for label, c in (("cache_a", cache_a), ("cache_b", cache_b)):
            missing = [n for n in layers if n not in c.layers]
            if missing or not layers:
                both = [n for n in cache_a.layers if n in cache_b.layers]
                raise ValueError(f"Layer(s) {missing or layers} are not in {label}; the layers "
                                 f"both caches hold: {both}.")
        _check_aligned(cache_a, cache_b, layers)
        return cls(model_a, model_b, data, cache_a, cache_b, layers, names, **settings)

    def _layer(self, layer: str | None) -> str:
        if layer is None:
            if len(self.layers) != 1:
                raise ValueError(f"This diff has layers {self.layers}; pass layer=... to say which.")
            return self.layers[0]
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name (str), got {type(layer).__name__}.")
        if layer not in self.layers:
            raise ValueError(f"Layer {layer!r} is not in this diff; it has {self.layers}. "
                             "Pass layers=[...] to diff_models to diff another.")
        return layer

    def alignment(self, layer: str | None = None) -> Alignment:
        """The cross-fitted ridge maps of one layer, both ways (computed once, then kept)."""
        name = self._layer(layer)
        if name not in self._aligned:
            la, lb = self.cache_a[name], self.cache_b[name]
            self._aligned[name] = align(la.acts.float(), lb.acts.float(), la.sample_id,
                                        self.cache_a.n_samples, self.folds, self.alpha, self.seed)
        return self._aligned[name]

    def summary(self) -> DiffTable:
        """Per layer: channels, linear CKA, held-out R^2 of b from a and of a from b, and the
        mean novelty each way. Values near 1, 1, 1 and 0: the layers carry the same information."""
        a, b = self.names
        rows = []
        for name in self.layers:
            al = self.alignment(name)
            rows.append({
                "layer": name, "channels_a": self.cache_a[name].n_channels,
                "channels_b": self.cache_b[name].n_channels, "cka": al.cka,
                "r2_b_from_a": al.r2_b, "r2_a_from_b": al.r2_a,
                "novelty_b": float(self.novelty(name, "b").mean()),
                "novelty_a": float(self.novelty(name, "a").mean()),
            })
        fmt = {k: ".3f" for k in ("cka", "r2_b_from_a", "r2_a_from_b", "novelty_b", "novelty_a")}
        return DiffTable(f"{b} against {a}: alignment per layer ({self.cache_a.n_samples} samples, "
                         f"{self.folds}-fold cross-fitted ridge)", list(rows[0]), rows, fmt)

    def novelty(self, layer: str | None = None, direction: str = "b") -> np.ndarray:
        """Per row, the share of one model's centred activation the other's leaves unexplained.

        direction : "b" (what b has that a lacks: b's rows predicted from a's) or "a" (the
            reverse)
        Returns float32 array, shape (n_rows,), in [0, 1] (see the module doc for the floor).
        """
        name = self._layer(layer)
        if direction not in DIRECTIONS:
            raise ValueError(f'direction must be "a" or "b", got {direction!r}: "b" scores what '
                             f"{self.names[1]!r} has that {self.names[0]!r} lacks, \"a\" the reverse.")
        al = self.alignment(name)
        cache, pred = (self.cache_b, al.pred_b) if direction == "b" else (self.cache_a, al.pred_a)
        return novelty_of(cache[name].acts.float().cpu(), pred, self.floor_share)

    def atlas(self, layer: str | None = None, direction: str = "b", grid_size: int = 20, **kwargs):
        """The novel model's layer as a DiffAtlas, cells scored by mean novelty.

        direction : "b" lays out b's layer scored against a; "a" lays out a's against b
        kwargs : passed to ``layout.diff.diff_atlas`` (``min_count``, ``seed``, ``n_neighbors``,
            ``min_dist``, ``icon_size``, ``xy``)
        """
        from ..layout.diff import diff_atlas

        _image_only(self, "atlas()")
        name = self._layer(layer)
        nov = self.novelty(name, direction)
        a, b = self.names
        cache, names = (self.cache_b, (a, b)) if direction == "b" else (self.cache_a, (b, a))
        return diff_atlas(cache, nov, names, name, grid_size=grid_size, **kwargs)

    def cache(self, direction: str = "b") -> ActivationCache:
        """The cache that ``atlas(direction=...)`` lays out: b's for ``"b"``, a's for ``"a"``."""
        if direction not in DIRECTIONS:
            raise ValueError(f'direction must be "a" or "b", got {direction!r}.')
        return self.cache_b if direction == "b" else self.cache_a

    def class_shift(self, layer: str | None = None, share: float = 0.1,
                    by: str = "novel_change") -> DiffTable:
        """Which classes' attributions at ``layer`` moved most from a to b, most moved first.

        For each class c and row i, t(i, c) is the attribution of the row's activation to the
        class logit (activation x gradient, summed over channels: logit units), in each model.
        Columns:

        - ``novel_change``: mean of t_b - t_a over the ``share`` most novel rows of b (``novelty
          (layer, "b")``): the evidence for the class that b's new representation adds;
        - ``change``: mean of t_b - t_a over all rows;
        - ``moved``: mean |t_b - t_a| / mean |t_a| over all rows;
        - ``abs_a``, ``abs_b``: mean |t_a|, mean |t_b|.

        by : the column to sort by, largest first. The default ranks classes by what they gained
            where b differs: fine-tuning moves every class's attributions a little everywhere
            (``moved`` is 0.25 to 0.36 for every class of the kitchen variants), so a flaw shows
            as evidence for its class concentrated on the novel rows, not as the largest
            overall movement (the rewired "wok" of variant-1 moved least overall).
        """
        _image_only(self, "class_shift()")
        name = self._layer(layer)
        number(share, "share", 0, 1, low_open=True)
        ta = self.class_attributions(name, "a")
        tb = self.class_attributions(name, "b")
        nov = self.novelty(name, "b")
        top = np.argsort(-nov, kind="stable")[: max(1, int(np.ceil(share * len(nov))))]
        classes = [class_name(c, self.cache_a.classes) for c in range(ta.shape[1])]
        shift = (tb - ta).astype(np.float64)
        rows = []
        for c, cls in enumerate(classes):
            abs_a = float(np.abs(ta[:, c]).mean())
            rows.append({
                "class": cls, "novel_change": float(shift[top, c].mean()),
                "change": float(shift[:, c].mean()),
                "moved": float(np.abs(shift[:, c]).mean()) / max(abs_a, 1e-12),
                "abs_a": abs_a, "abs_b": float(np.abs(tb[:, c]).mean()),
            })
        columns = list(rows[0])
        if by not in columns[1:]:
            raise ValueError(f"by must be one of {columns[1:]}, got {by!r}.")
        rows.sort(key=lambda r: -r[by])
        a, b = self.names
        fmt = {"novel_change": "+.4f", "change": "+.4f", "moved": ".3f", "abs_a": ".4f",
               "abs_b": ".4f"}
        return DiffTable(f"Attribution to each class logit at {name!r}, {a} -> {b} (novel rows: the "
                         f"{len(top)} most novel of {len(nov)}), sorted by {by}", columns, rows, fmt)

    def class_attributions(self, layer: str | None = None, direction: str = "a") -> np.ndarray:
        """Per row and class, the row's attribution to the class logit in one model.

        Returns float32 array, shape (n_rows, n_classes): activation x gradient summed over
        channels. The per-channel attributions are kept in the cache
        (``cache[layer].attributions[class name]``), so each is computed once.
        """
        _image_only(self, "class_attributions()")
        name = self._layer(layer)
        if direction not in DIRECTIONS:
            raise ValueError(f'direction must be "a" or "b", got {direction!r}.')
        model = self.model_a if direction == "a" else self.model_b
        cache = self.cache(direction)
        n_a, n_b = self.cache_a.logits.shape[1], self.cache_b.logits.shape[1]
        if n_a != n_b:
            raise ValueError(f"The models have {n_a} and {n_b} outputs; class_shift compares the "
                             "same class logits in both, so they must have the same classes.")
        return _class_totals(model, self.data, name, cache, self.batch_size)


def _class_totals(model: nn.Module, data: Any, layer: str, cache: ActivationCache,
                  batch_size: int) -> np.ndarray:
    """(n_rows, n_classes) attribution of each cached row to each class logit, summed over
    channels. Classes not yet stored in the cache are computed by ``aw.attribute`` in one pass
    over the data (one forward pass per batch, one gradient per class), on the model's own
    device, and stored with ``cache.add_attribution``."""
    n_out = int(cache.logits.shape[1])
    targets = [Target("class", (c,)) for c in range(n_out)]
    la = cache[layer]
    missing = [t for t in targets if find_stored(la, t, cache.classes, n_out) is None]
    if missing:
        cache.add_attribution(attribute(model, data, layer, missing, cache=cache, store=False,
                                        batch_size=batch_size, device=model_device(model),
                                        progress=False))
    return torch.stack([cache.attribution(layer, t).sum(1) for t in targets], 1).cpu().numpy()


def _probe(model: nn.Module, which: str, x: torch.Tensor, names: list[str]) -> dict[str, tuple]:
    """Shapes of the named layers' outputs on one input batch; a clear error when the model
    cannot take the input."""
    try:
        shape = lambda n, out: tuple(getattr(out, "shape", ()))  # noqa: E731
        with eval_mode(model), torch.no_grad(), hooks(model, names, shape) as rec:
            model(as_model_input(model, x))
    except Exception as err:  # any failure here is the model refusing this input
        raise ValueError(f"Model {which} cannot run on the data's input size "
                         f"{tuple(x.shape[1:])}: {type(err).__name__}: {err}. Both models must take "
                         "the same inputs; resize the data to the size both expect.") from err
    return dict(rec)


def diff_models(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    layers: LayerSpec | None = None,
    names: Sequence[str] = ("a", "b"),
    per_image: int = 16,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    batch_size: int = 64,
    folds: int = 5,
    alpha: float = 0.01,
    floor_share: float = 1.0,
    progress: bool = False,
) -> ModelDiff:
    """Capture two models on the same data at the same positions, ready to compare.

    model_a, model_b : torch modules taking the same inputs (a is the reference)
    data : the data forms ``aw.capture`` takes, re-iterable (a tensor, (images, labels), a
        DataLoader without shuffling): both models and the attributions read it. Token inputs
        (int ids (N, T), a tokenizer's dicts or columns with ``attention_mask``) work too: both
        models read the same token batches, ``layers`` must be named, and the diff offers
        ``summary``, ``novelty`` and ``alignment`` (``class_shift`` and ``atlas`` are for images)
    layers : a layer name or list of names present in both models; None takes every top-level
        child module whose output is a (N, C, H, W) map in both
    names : (name of a, name of b), for tables and legends (shown as text)
    per_image, seed : ``"random"`` sampling of ``aw.capture``; both captures use the same, so
        their rows are the same samples and positions (checked)
    classes : class names indexed by output; default model a's ``.classes``
    folds, alpha, floor_share : the alignment's settings (module doc): ``alpha=0.01`` explained
        the kitchen variants best and left their planted cues most novel (0.001 to 10 tried)
    Returns ModelDiff. Raises ValueError for layers missing from a model, models that cannot
    take the data's inputs or whose layers have different grids, and data that changed between
    the two passes.
    """
    for which, m in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{which} must be a torch.nn.Module, got {type(m).__name__}.")
    names = _checked_names(names)
    _check_settings(folds, alpha, floor_share, batch_size)  # fail before the captures
    settings = dict(folds=folds, alpha=alpha, floor_share=floor_share, seed=seed,
                    batch_size=batch_size)
    if not isinstance(data, (torch.Tensor, np.ndarray, tuple, list)) and iter(data) is data:
        raise TypeError("data is a one-pass iterator; diff_models reads it once per model. Pass "
                        "a tensor, (images, labels) or a DataLoader instead.")
    chosen = _common_layers(model_a, model_b, layers, names)
    stream, _ = batches(data, 2)
    first = next(iter(stream), None)
    if first is None:
        raise ValueError("data is empty: it yielded no images.")
    if _is_tokens(first[0]):
        return _diff_tokens(model_a, model_b, data, layers, chosen, names, settings,
                            dict(sample="random", per_image=int(per_image), seed=int(seed),
                                 batch_size=int(batch_size), progress=progress))
    x, _ = check_batch(*first, 0)
    shapes_a = _probe(model_a, f"a ({names[0]!r})", x, chosen)
    shapes_b = _probe(model_b, f"b ({names[1]!r})", x, chosen)
    if layers is None:
        # conv maps of the same grid in both: the layers whose rows can be matched
        chosen = [n for n in chosen if len(shapes_a.get(n, ())) == 4
                  and shapes_a[n][2:] == shapes_b.get(n, ())[2:]]
        if not chosen:
            raise ValueError("The models share no top-level layer with a (N, C, H, W) output of "
                             f"the same grid size; pass layers=[...] by name. {LIST_HINT}")
    for n in chosen:
        ha, hb = shapes_a.get(n, ())[2:], shapes_b.get(n, ())[2:]
        if ha != hb:
            raise ValueError(f"Layer {n!r} has a {ha} grid in model a and {hb} in model b, so their "
                             "positions cannot be matched row for row; diff layers with the same "
                             "grid size.")
    if classes is None:
        classes = model_classes(model_a) or model_classes(model_b)
    kw = dict(sample="random", per_image=int(per_image), seed=int(seed), batch_size=int(batch_size),
              keep_images=True, classes=classes, progress=progress)
    cache_a = capture(model_a, data, chosen, **kw)
    cache_b = capture(model_b, data, chosen, **kw)
    return ModelDiff.from_caches(model_a, model_b, data, cache_a, cache_b, names, chosen,
                                 **settings)


def _is_tokens(x) -> bool:
    """Whether a batch is token ids (an int (N, T) tensor) or a tokenizer's dict of them."""
    if isinstance(x, Mapping):
        return "input_ids" in x
    return isinstance(x, torch.Tensor) and x.ndim == 2 and not x.is_floating_point() and x.dtype != torch.bool


def _diff_tokens(model_a, model_b, data, layers, chosen, names, settings, kw) -> ModelDiff:
    """``diff_models`` on token inputs: both models captured on the same token batches, whose
    rows are the same (sample, token) in both (sampled by sample id, padding never a row)."""
    if layers is None:
        raise ValueError("For token inputs name the layers to diff, present in both models and "
                         "with a (N, T, D) output, e.g. layers='blocks.1.mlp.act'. " + LIST_HINT)
    cache_a = capture(model_a, data, chosen, **kw)
    cache_b = capture(model_b, data, chosen, **kw)
    for n in chosen:
        kinds = (cache_a[n].kind, cache_b[n].kind)
        if kinds != ("tokens", "tokens"):
            raise ValueError(f"Layer {n!r} outputs {kinds[0]!r} rows in model a and {kinds[1]!r} in "
                             "model b; on token inputs diff layers whose output is (N, T, D) in both.")
    return ModelDiff.from_caches(model_a, model_b, data, cache_a, cache_b, names, chosen, **settings)


def _image_only(diff: ModelDiff, what: str) -> None:
    if getattr(diff.cache_a, "tokens", None) is not None:
        raise ValueError(f"{what} is for image models (class logits, image icons); a diff on token "
                         "inputs has summary(), novelty() and alignment().")


def _check_settings(folds, alpha, floor_share, batch_size) -> None:
    for arg, value, low in (("folds", folds, 2), ("batch_size", batch_size, 1)):
        int_at_least(value, arg, low)
    for arg, value in (("alpha", alpha), ("floor_share", floor_share)):
        number(value, arg, 0)


def _checked_names(names) -> tuple[str, str]:
    if (isinstance(names, str) or not isinstance(names, (tuple, list)) or len(names) != 2
            or not all(isinstance(n, str) for n in names)):
        raise TypeError(f"names must be a pair of str (name of a, name of b), got {names!r}.")
    if names[0] == names[1]:
        raise ValueError(f"names must differ, got {names[0]!r} twice.")
    return str(names[0]), str(names[1])


def _common_layers(model_a: nn.Module, model_b: nn.Module, layers, names) -> list[str]:
    """The layers to diff, each present in both models."""
    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    both = [n for n in mods_a if n and n in mods_b]
    if layers is None:
        kids_b = dict(model_b.named_children())
        chosen = [n for n, _ in model_a.named_children() if n in kids_b]
        if not chosen:
            raise ValueError("The models share no top-level layer name; pass layers=[...] with "
                             f"names both have: {both[:30]}.")
        return chosen
    if callable(layers) and not isinstance(layers, (str, list, tuple)):
        raise TypeError("layers must be a name or a list of names present in both models (a "
                        "predicate could select different layers in each).")
    if isinstance(layers, str):
        wanted = [layers]
    elif isinstance(layers, (list, tuple)) and layers and all(isinstance(n, str) for n in layers):
        wanted = list(layers)
    else:
        raise TypeError(f"layers must be a layer name or a non-empty list of names, got {layers!r}.")
    for label, mods in ((f"a ({names[0]!r})", mods_a), (f"b ({names[1]!r})", mods_b)):
        missing = [n for n in wanted if n not in mods]
        if missing:
            more = f" (first 30 of {len(both)})" if len(both) > 30 else ""
            raise ValueError(f"Layer(s) {missing} do not exist in model {label}. Layers both "
                             f"models have{more}: {both[:30]}.")
    return resolve_layers(model_b, wanted)


def _check_aligned(cache_a: ActivationCache, cache_b: ActivationCache, layers: list[str]) -> None:
    """Row i must be the same sample and position in both caches, of the same input."""
    if cache_a.n_samples != cache_b.n_samples or (
            cache_a.sample_digest is not None and cache_b.sample_digest is not None
            and not torch.equal(cache_a.sample_digest, cache_b.sample_digest)):
        raise ValueError("The data differed between the two models' passes (a shuffling "
                         "DataLoader or random augmentation?); pass fixed data in a fixed order.")
    for n in layers:
        la, lb = cache_a[n], cache_b[n]
        if not (torch.equal(la.sample_id.cpu(), lb.sample_id.cpu())
                and torch.equal(la.yx.cpu(), lb.yx.cpu())):
            raise ValueError(f"The rows of layer {n!r} are not the same samples and positions in "
                             "both captures; diff layers with the same grid size.")
