"""Capture activations of chosen layers into an ActivationCache.

Hooks live only inside the ``hooks()`` context manager and are removed in ``finally``, so a user's
model never keeps one, even after an error. ``capture()`` copies only the sampled slice of each
layer's output inside the hook (a gather on the device), so its cost is about one forward pass.

Sampling policies over the spatial positions of an (N, C, H, W) output:

- ``"all"``: every position, rows ordered by sample, then y, then x;
- ``"random"``: ``per_image`` positions per sample without replacement (all of them when the grid
  has fewer), ordered by position. The positions of sample ``i`` depend only on ``(seed, i)`` and
  the grid size, through an integer hash computed with int64 tensor ops, so they are the same for
  any batch size, after a resume, and on CPU and CUDA. Layers with the same grid size get the same
  positions, so their rows line up;
- ``"mean"``: the spatial mean, one row per sample with ``(y, x) = (-1, -1)``. Only this policy
  also accepts layers whose output is (N, C), such as a linear layer.

Inputs (see ``inputs.py``): a batch is an image tensor (N, C, H, W); token ids (N, T); a dict of
tensors (a tokenizer's output, a ``BatchEncoding``) passed as ``model(**batch)`` without its label
keys (a dict with ``input_ids`` is text; one with an image key such as ``pixel_values`` is images,
passed as ``model(images)``); or anything, through ``forward=fn`` (``fn(batch)`` returns the
output). A model that fails on the first batch gets an error saying what the batch looked like and
how to pass it, chained from the model's own. ``preprocess=fn`` maps each image batch before the
model (e.g. ImageNet normalisation); the display copies and the receptive-field probe use the
images before it, and ``cache.preprocess`` keeps it (in memory) so that later re-runs of the model
(the neuron viewer) can apply it exactly as capture did.

Token positions. A layer whose output is (N, T, D) on text is a sequence: each valid token
(attention mask 1; padding never becomes a row) is a position, kept as ``yx = (0, t)`` with t the
token's index among its sample's valid tokens (its column in ``cache.tokens``); the layer's
``kind`` is "tokens" and its ``hw`` (1, T_max). Rows per sample vary: "random" takes
min(per_image, valid tokens), "all" every valid token, "mean" their mean. Batches may be padded to
different lengths, on either side: the rows do not change. On an image input, an (N, T, D) output is
a ViT block whose patch tokens form an (h, w) grid (``prefix_tokens`` leading CLS/register
tokens dropped; see ``sampling.py``), a "grid" layer like a conv layer's.

Outputs are read by name (a tensor; "logits" of a dict or ModelOutput; ``logits=`` for a key,
attribute or tuple index). (N, V) logits are per sample, ``cache.logits``. (N, T, V) logits are per
token: they are not kept (``cache.logits`` is (N, 0) and ``cache.meta["output"]`` "per_token"),
rather than flattened into N x (T * V) made-up classes.

Cost: besides the forward pass, a capture hashes each input sample (XXH3-128, in a thread beside
the forward pass; the store uses it to recognise the data on resume), makes the uint8 display
copy (at most ``display_size`` px a side, see ``data.display_hw``), and probes each layer's
receptive field once with one image's input gradient. Image captures write every per-sample
column (rows, ids, positions, labels, logits, display copies, digests) straight into buffers
(``buffers.Columns``): one buffer when the data announces its size (a tensor, a tuple, a
DataLoader), so no concatenation at the end; chunks joined once when it does not (an iterator),
so the peak stays near the cache's size. bench/capture.py measures the ratio to a plain forward
pass, bench/memory.py the peak memory against the cache's bytes.

Devices: the cache's activations end where the model runs. By default that is CUDA when it is
available (a model on the CPU is moved there for the capture), else where the model is; with
``device=...``, there. A model that is moved for the capture is moved back afterwards. The model runs in
eval mode (dropout off, batch-norm statistics frozen); each module's training flag is restored.

Layer selection and the hooks context manager live in ``hooks.py``; they are re-exported here.
The state of one capture (batches, rows, shards) is ``run._Run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .cache import ActivationCache
from .checks import int_at_least, integer, non_negative_int, one_of, positive_int
from .data import DISPLAY_SIZE, batches
from .files import user_path
from .hooks import LayerSpec, eval_mode, hooks, on_device, resolve_layers
from .inputs import model_vocab, read_vocab
from .progress import checked_progress, progress_bar
from .run import _Run
from .targets import model_classes
from .topk import stats_config

__all__ = ["resolve_layers", "hooks", "capture"]

POLICIES = ("random", "all", "mean")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- capture


def capture(
    model: nn.Module,
    data: Any,
    layers: LayerSpec,
    sample: str = "random",
    per_image: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = 64,
    keep_images: bool = True,
    display_size: int | None = DISPLAY_SIZE,
    classes: Sequence[str] | None = None,
    store: str | Path | None = None,
    shard_samples: int = 1024,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
    to_display: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stats: bool | dict | None = None,
    forward: Callable[[Any], Any] | None = None,
    logits: int | str | None = None,
    vocab: Any = None,
    prefix_tokens: int | None = None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ActivationCache:
    """Run ``model`` over ``data`` and keep the sampled activations of ``layers``.

    data : float tensor (N, C, H, W) (cut into batches of ``batch_size``), a tuple
        (images, labels, ...) such as ``kitchen.dataset(n)``, a dict of columns, or an iterable
        (a DataLoader) of image batches, (images, labels, ...) batches or dict batches. Dicts keep
        images under the first key of ``data.IMAGE_KEYS`` present ("images", "image",
        "pixel_values", ...) and labels under ``data.LABEL_KEYS`` ("labels", "label", ...).
        Labels are class indices, one per image, shape (N,): -1 for no label, and below
        ``len(classes)`` when class names are known (class names, one-hot rows or floats are
        refused with the fix to use). Missing labels become -1. Images may be normalised (see
        ``to_display`` and ``preprocess``); they must be float and all of one height and width.
        Text: token ids (N, T), a pair (ids, labels), a dict of columns or dict batches with
        ``input_ids`` (and ``attention_mask``; a tokenizer's output), passed as ``model(**batch)``
        without the label keys; anything else through ``forward``. See the module docstring.
    layers : a ``named_modules()`` name, a list of names, or a predicate (name, module) -> bool
    sample : "random" (``per_image`` positions per sample, seeded; for text, up to ``per_image``
        valid tokens), "all" or "mean" (see module doc)
    dtype : dtype of the cached activations (float32, float16 or bfloat16); logits stay float32
    keep_images : keep a uint8 copy (n_samples, 3, H, W) of the inputs for display, made by
        ``to_display(batch)`` (for normalised inputs: map them back to RGB in [0, 1]) or, without
        it, by clamping the inputs to [0, 1]. Inputs well outside [0, 1] without ``to_display``
        warn (UserWarning); a ``to_display`` that returns no floats, or values well outside
        [0, 1], is refused on the first batch
    display_size : the longest side of the display copies, in pixels (int >= 16), or None to keep
        them at the inputs' size. Default 128: the widgets draw whole images at 96 px at most and
        receptive-field crops at 48 px, so larger copies only cost memory (224 px images: 147 KB
        each, 49 KB at 128). Where a captured layer's receptive field would span fewer than 48
        display pixels the copies stay larger (up to the inputs' size), so atlas icons are never
        enlarged from a smaller crop than before. Images up to 128 px are kept as they are.
    store : a directory to stream shards of ``shard_samples`` samples into while capturing. If it
        already holds shards of the same capture (same model, layers, policy), they are reused after
        checking that the data matches, and the capture resumes after them with bit-identical results.
    classes : class names indexed by label, kept in the cache; default the model's own
        ``model.classes`` when it has them (the zoo's models do)
    stats : True, or a dict with any of ``k``, ``bins``, ``reservoir``, ``seed`` (see
        ``atlaswidgets.cache.topk``): also stream per-channel statistics over every spatial
        position of each layer (top-k samples, histograms, quantile-bin sketch) into
        ``cache.stats[layer]``, on the capture's device. Off by default (it costs extra passes
        over each layer's whole output).
    forward : a function ``fn(inputs) -> output`` that calls the model on one batch's inputs (as the
        data gives them, on the capture's device), for inputs the model does not take as
        ``model(x)`` or ``model(**dict)``; see ``atlaswidgets.cache.inputs``
    logits : where the model's output keeps the logits: a tuple index (a tuple output needs it),
        or a dict key / attribute name (default "logits"; a plain tensor is the logits)
    vocab : token strings indexed by id (a list, or a tokenizer), kept as ``cache.vocab``; default
        the model's ``model.vocab`` when it has one. Token ids must be below its length.
    prefix_tokens : for a ViT block of an image model, how many leading tokens (CLS, registers)
        are not patches; see ``atlaswidgets.cache.sampling``
    preprocess : a function applied to each image batch before the model (e.g. ImageNet
        normalisation), kept as ``cache.preprocess`` (in memory only: pass it again after loading).
        Display copies are then made from the images before it, so ``to_display`` is not needed.
    progress : True shows a bar over the images (``cache/progress.py``: a widget in a notebook's
        output, text on stderr elsewhere); False hides it
    Returns an ActivationCache with activations, labels and logits on the model's device (see
    module doc), images and per-sample input checksums on the CPU. Raises ValueError/TypeError
    for bad layers, data or arguments, and for NaN or infinite activations.
    """
    one_of(sample, "sample", POLICIES)
    checked_progress(progress)
    for arg, value in (("per_image", per_image), ("batch_size", batch_size), ("shard_samples", shard_samples)):
        positive_int(value, arg)
    integer(seed, "seed")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {[str(d) for d in _DTYPES]}, got {dtype!r}.")
    for arg, fn in (("forward", forward), ("preprocess", preprocess), ("to_display", to_display)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{arg} must be a function, got {type(fn).__name__}.")
    if display_size is not None:
        int_at_least(display_size, "display_size", 16, "pixels, or None for full-size copies")
    if prefix_tokens is not None:
        non_negative_int(prefix_tokens, "prefix_tokens", "leading non-patch tokens")
    vocab = read_vocab(vocab) if vocab is not None else model_vocab(model)
    if classes is None:
        classes = model_classes(model)
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise TypeError("classes must be a list of class names (str), indexed by label.")
        classes = list(classes)
    if store is not None:  # checked before any work, like every other argument
        store = user_path(store, "capture(..., store=path)")
    names = resolve_layers(model, layers)
    stats_cfg = stats_config(stats)
    run = _Run(model, names, sample, int(per_image), int(seed), dtype, keep_images, to_display,
               classes, int(shard_samples), stats_cfg,
               display_size=None if display_size is None else int(display_size))
    run.setup(forward, logits, vocab, None if prefix_tokens is None else int(prefix_tokens), preprocess)
    # labels are checked against the class names before the model sees them: a pair's or a dict's
    # all at once here, an iterable's batch by batch in check_batch. Before the store is opened,
    # so that data refused now leaves no store directory (nor lock) behind
    n_classes = len(classes) if classes else None
    try:
        stream, total = batches(data, int(batch_size), n_classes)
        run.open_store(store)
    except BaseException:
        run.close()
        raise
    run.capacity = total if total else None
    bar = progress_bar("capture", total, "img", progress)
    try:
        # the model's place and each submodule's mode come back afterwards, even after an error
        with on_device(model, device) as dev, eval_mode(model):
            run.dev = dev
            with torch.no_grad(), hooks(model, names, run.hook) as recorded:
                run.recorded = recorded
                for i, (inputs, labels) in enumerate(stream):
                    batch = run.batch_of(inputs, labels, i, n_classes)
                    run.feed(batch)
                    bar.update(batch.n)
            return run.finish()
    finally:
        bar.close()
        run.close()


