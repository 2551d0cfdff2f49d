"""What one batch of model input is, how the model is called with it, and how its output is read.

A batch's input part is one of:

- a float image tensor (N, C, H, W), passed as ``model(x)`` (after ``preprocess`` when given);
- an integer token-id tensor (N, T), passed as ``model(ids)``: text, every token valid;
- a dict (any Mapping, such as a tokenizer's ``BatchEncoding``) of tensors, passed as keyword
  arguments ``model(**inputs)`` with the kit's label keys (``data.LABEL_KEYS``) removed first (a
  Hugging Face model would compute a loss from ``labels``). With ``input_ids`` it is text, masked
  by its ``attention_mask`` when it has one. A dict without ``input_ids`` that holds an image
  under one of ``data.IMAGE_KEYS`` is an image batch, as before;
- anything else, through ``capture(..., forward=fn)``: ``fn(inputs)`` returns the model's output.
  Its samples are counted along the first dimension of its tensors (or its length, for a list of
  strings). A dict with ``input_ids`` keeps its token positions (``forward`` receives the dict);
  other inputs carry no attention mask, so capture cannot tell their tokens from padding, and
  refuses (N, T, D) layers on them.

Labels of a text batch are one class index per sample; per-token labels (N, T) of the ids' shape
(a language-modelling collator's targets) are not classes of the sample and are left out.

Token batches are checked before the model runs: ids below the vocabulary size (from ``vocab=``
or the model's input embedding), a 0/1 attention mask of the ids' shape.

The model's output is read by name, never by position: a tensor is the logits; a dict or a
``ModelOutput`` gives its ``"logits"``; ``logits=`` picks a key, attribute or tuple index (a tuple
is read only with it). (N, V) logits are per sample; (N, T, V) logits are per token; (N,) is one
column, and a map (N, C, H, W) is flattened to one row per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import xxhash

__all__ = ["model_failed", "Batch", "make_batch", "select_logits", "read_vocab", "vocab_size_of", "describe"]

TEXT_KEYS = ("input_ids",)
MASK_KEY = "attention_mask"


def _tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
        return torch.from_numpy(x)
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return torch.from_numpy(x)
    return x


def describe(x: Any) -> str:
    """A short description of an input for error messages: types, shapes, dtypes, keys."""
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, Mapping):
        parts = [f"{k!r}: {describe(v)}" for k, v in list(x.items())[:8]]
        return f"a {type(x).__name__} {{{', '.join(parts)}}}"
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)} items" + (f", the first {describe(x[0])}" if x else "")
    return f"a {type(x).__name__}"


def _n_of(x: Any) -> int | None:
    """Samples in an input: the first dimension of its first tensor, or its length."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.ndim else None
    if isinstance(x, Mapping):
        for v in x.values():
            n = _n_of(_tensor(v))
            if n is not None:
                return n
        return None
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(v, str) for v in x):
            return len(x)
        for v in x:
            n = _n_of(_tensor(v))
            if n is not None:
                return n
    return None


def _rows(x: Any, a: int, b: int) -> Any:
    """Samples [a, b) of an input (tensors sliced along their first dimension)."""
    if isinstance(x, torch.Tensor):
        return x[a:b] if x.ndim else x
    if isinstance(x, Mapping):
        return {k: _rows(_tensor(v), a, b) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(v, str) for v in x):
            return list(x[a:b])
        return type(x)(_rows(_tensor(v), a, b) for v in x) if isinstance(x, list) else tuple(
            _rows(_tensor(v), a, b) for v in x)
    return x


def _to(x: Any, dev: torch.device, dtype: torch.dtype | None) -> Any:
    """Tensors of an input on ``dev``; floating ones in the model's dtype."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() and dtype is not None and x.dtype != dtype:
            return x.to(dev, dtype, non_blocking=True)
        return x.to(dev, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: _to(_tensor(v), dev, dtype) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to(_tensor(v), dev, dtype) for v in x)
    if isinstance(x, list) and not all(isinstance(v, str) for v in x):
        return [_to(_tensor(v), dev, dtype) for v in x]
    return x


def _digest_parts(x: Any, n: int) -> list[list[bytes]]:
    """Per sample, the byte strings that identify it in an input of any form."""
    if isinstance(x, torch.Tensor):
        cpu = x.detach().to("cpu").contiguous()
        if cpu.ndim == 0 or cpu.shape[0] != n:
            return [[f"{cpu.dtype}|{tuple(cpu.shape)}|".encode()] for _ in range(n)]
        prefix = f"{cpu.dtype}|{tuple(cpu.shape[1:])}|".encode()
        rows = cpu.reshape(n, -1).view(torch.uint8).numpy()
        return [[prefix, row.tobytes()] for row in rows]
    if isinstance(x, Mapping):
        out = [[] for _ in range(n)]
        for k in sorted(x, key=str):
            for i, parts in enumerate(_digest_parts(_tensor(x[k]), n)):
                out[i] += [f"{k}=".encode(), *parts]
        return out
    if isinstance(x, (list, tuple)):
        if len(x) == n and all(isinstance(v, str) for v in x):
            return [[b"str|", v.encode("utf-8")] for v in x]
        out = [[] for _ in range(n)]
        for v in x:
            for i, parts in enumerate(_digest_parts(_tensor(v), n)):
                out[i] += parts
        return out
    raise TypeError(f"capture cannot tell the samples of {describe(x)} apart (to check a resumed "
                    "store against the data): pass batches made of tensors, dicts or tuples of "
                    "tensors, or lists of strings.")


@dataclass
class Batch:
    """One batch of input, in the form the model is called with.

    kind : "image" (x is a float tensor (N, C, H, W)), "tokens" (x is an int tensor (N, T) or a
        dict of tensors with "input_ids") or "other" (anything, called through ``forward=``)
    x : the input as given (labels removed from a dict)
    n : samples in the batch
    ids : (N, T) int64 token ids on the CPU, or None
    mask : (N, T) bool on the CPU (True for real tokens), or None
    labels : (N,) int64 class indices (-1: none), or None
    """

    kind: str
    x: Any
    n: int
    ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    compact: torch.Tensor | None = field(default=None, repr=False)  # see compact_tokens()

    def head(self, k: int) -> "Batch":
        """The first k samples."""
        return Batch(self.kind, _rows(self.x, 0, k), min(k, self.n),
                     None if self.ids is None else self.ids[:k], None if self.mask is None else self.mask[:k],
                     None if self.labels is None else self.labels[:k])

    def model_input(self, dev: torch.device, dtype: torch.dtype | None) -> Any:
        return _to(self.x, dev, dtype)

    def call(self, model: Any, x: Any, forward: Callable | None, preprocess: Callable | None) -> Any:
        """The model's output on ``x`` (this batch, already on the device); an image batch goes
        through ``preprocess`` first, also on its way to ``forward``."""
        if self.kind == "image" and preprocess is not None:
            x = preprocess(x)
        if forward is not None:
            return forward(x)
        if self.kind == "image":
            return model(x)
        if isinstance(x, Mapping):
            return model(**x)
        return model(x)

    def valid_tokens(self) -> torch.Tensor:
        """(N, T) bool: True for the tokens that become rows (all, without a mask)."""
        if self.mask is not None:
            return self.mask
        return torch.ones(self.ids.shape, dtype=torch.bool)

    def compact_tokens(self) -> torch.Tensor:
        """(N, W) int64 on the CPU: each sample's valid token ids from the left, -1 after; W is the
        most valid tokens of any sample of the batch. Independent of padding side and width.
        Made once per batch (the digests and the cache's tokens both need it)."""
        if self.compact is None:
            self.compact = self._compact_tokens()
        return self.compact

    def _compact_tokens(self) -> torch.Tensor:
        valid = self.valid_tokens()
        count = valid.sum(1)
        w = int(count.max()) if self.n else 0
        out = torch.full((self.n, w), -1, dtype=torch.int64)
        idx = valid.long().cumsum(1) - 1
        b, t = valid.nonzero(as_tuple=True)
        out[b, idx[b, t]] = self.ids[b, t].long()
        return out

    def digests(self) -> bytes:
        """XXH3-128 digest (16 bytes) of each sample: its label and its input (for tokens, the
        valid ids only, so padding does not change a sample's digest)."""
        labels = self.labels.tolist() if self.labels is not None else [-1] * self.n
        if self.kind == "tokens":
            tokens = self.compact_tokens().numpy()
            parts = [[b"tokens|", row[row >= 0].tobytes()] for row in tokens]
        else:
            parts = _digest_parts(self.x, self.n)
        out = bytearray()
        for label, ps in zip(labels, parts):
            h = xxhash.xxh3_128(f"{label}|".encode())
            for p in ps:
                h.update(p)
            out += h.digest()
        return bytes(out)


def make_batch(x: Any, labels: Any, index: int, forward: Callable | None, vocab_size: int | None,
               label_keys: tuple[str, ...]) -> Batch:
    """A Batch of a non-image input (the image path is ``data.check_batch``), checked.

    x : an int tensor (N, T) of token ids, a Mapping of tensors, or (with ``forward``) anything
    """
    x = _tensor(x)
    if isinstance(x, Mapping):
        x = {k: _tensor(v) for k, v in x.items() if k not in label_keys}
        if "input_ids" in x:
            ids, mask = x["input_ids"], x.get(MASK_KEY)
            ids, mask = check_tokens(ids, mask, index, vocab_size)
            return Batch("tokens", x, len(ids), ids, mask, per_sample_labels(labels, ids))
        if forward is None:
            bad = [k for k, v in x.items() if not isinstance(v, torch.Tensor)]
            if bad:
                raise TypeError(f"Batch {index} is a dict whose {bad[0]!r} is {describe(x[bad[0]])}, "
                                "not a tensor; a dict batch is passed as model(**batch) and must hold "
                                "tensors (a tokenizer needs return_tensors='pt'), or pass forward=fn.")
    elif isinstance(x, torch.Tensor) and x.ndim == 2 and not x.is_floating_point() and x.dtype != torch.bool:
        ids, _ = check_tokens(x, None, index, vocab_size)
        return Batch("tokens", x, len(ids), ids, None, per_sample_labels(labels, ids))
    elif forward is None:
        raise TypeError(f"Batch {index} is {describe(x)}: not an image batch (a float tensor (N, C, H, W)), "
                        "token ids (an int tensor (N, T)) or a dict of tensors (passed as "
                        "model(**batch)). For other inputs pass forward=fn, a function that calls "
                        "the model on one batch and returns its output, e.g. "
                        "forward=lambda texts: model(**tokenizer(texts, return_tensors='pt', padding=True)).")
    n = _n_of(x)
    if n is None:
        raise TypeError(f"Batch {index} is {describe(x)}, in which capture finds no samples: the inputs "
                        "passed to forward= must be tensors (N, ...), or dicts, tuples or lists of them, "
                        "or a list of strings.")
    return Batch("other", x, n, labels=labels)


def per_sample_labels(labels: Any, ids: torch.Tensor) -> Any:
    """``labels``, or None for per-token labels (N, T) of the ids' shape (see the module doc)."""
    labels = _tensor(labels)
    if isinstance(labels, torch.Tensor) and labels.ndim == 2 and tuple(labels.shape) == tuple(ids.shape):
        return None
    return labels


def check_tokens(ids: Any, mask: Any, index: int, vocab_size: int | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (N, T) int64 and the mask (N, T) bool (or None), on the CPU, or a clear error."""
    ids = _tensor(ids)
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
        one = isinstance(ids, torch.Tensor) and ids.ndim == 1
        hint = (" It looks like one example: batch them, e.g. with a DataLoader and a padding collator "
                "(transformers.DataCollatorWithPadding)." if one else "")
        raise ValueError(f"Batch {index}: input_ids must be an integer tensor (N, T), got {describe(ids)}. "
                         f"A tokenizer gives one with return_tensors='pt' and padding=True.{hint}")
    ids = ids.detach().to("cpu", torch.int64)
    if ids.numel():
        low, high = (int(v) for v in torch.aminmax(ids))
        if low < 0:
            raise ValueError(f"Batch {index}: token ids must be 0 or more, got {low}.")
        if vocab_size is not None and high >= vocab_size:
            raise ValueError(f"Batch {index}: token id {high} is not below the vocabulary size "
                             f"{vocab_size}; pass token ids of the model's own tokenizer (or the "
                             "full vocab=[...]).")
    if mask is None:
        return ids, None
    mask = _tensor(mask)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(ids.shape):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"Batch {index}: attention_mask must have the shape of input_ids "
                         f"{tuple(ids.shape)}, got {got}; pass the mask the tokenizer made with the ids.")
    m = mask.detach().to("cpu")
    if m.numel() and not bool(((m == 0) | (m == 1)).all()):
        bad = m[(m != 0) & (m != 1)][0].item()
        raise ValueError(f"Batch {index}: attention_mask must hold 0 (padding) and 1 (token), got {bad}.")
    m = m.bool()
    empty = (~m.any(1)).nonzero()
    if len(empty):
        raise ValueError(f"Batch {index}: sample {int(empty[0])} of the batch has no tokens (its "
                         "attention_mask is all 0); drop empty texts before capturing.")
    return ids, m


# ----------------------------------------------------------------------------- outputs


def select_logits(out: Any, n: int, logits: int | str | None = None) -> torch.Tensor:
    """The logits tensor of a model's output, read by name (see the module docstring), with its
    graph. Shape (N, V) (per sample) or (N, T, V) (per token); a (N,) output is one column."""
    picked = out
    if logits is not None:
        if isinstance(logits, bool) or not isinstance(logits, (int, str)):
            raise TypeError(f"logits= must be a tuple index (int) or a key/attribute name (str), got {logits!r}.")
        if isinstance(out, (tuple, list)) and isinstance(logits, int):
            if not -len(out) <= logits < len(out):
                raise ValueError(f"logits={logits}, but the model returned a {type(out).__name__} of "
                                 f"{len(out)} items.")
            picked = out[logits]
        elif isinstance(out, Mapping) and isinstance(logits, str) and logits in out:
            picked = out[logits]
        elif isinstance(logits, str) and not isinstance(out, Mapping) and hasattr(out, logits):
            picked = getattr(out, logits)
        else:
            raise ValueError(f"logits={logits!r} does not name an item of the model's output, "
                             f"{describe(out)}.")
    elif isinstance(out, Mapping):  # a dict, or a ModelOutput (an OrderedDict)
        if not isinstance(out.get("logits"), torch.Tensor):
            raise ValueError(_no_logits_key(out, n))
        picked = out["logits"]
    elif isinstance(out, (tuple, list)):
        raise ValueError(
            f"The model returned a {type(out).__name__} of {len(out)} items ({describe(out)}); capture "
            "does not guess which is the logits. Pass logits=i, the index of the logits in it, "
            "e.g. logits=1 for a model returning (embedding, logits)."
        )
    elif not isinstance(out, torch.Tensor) and isinstance(getattr(out, "logits", None), torch.Tensor):
        picked = out.logits
    if not isinstance(picked, torch.Tensor) or picked.ndim == 0 or picked.shape[0] != n:
        shape = tuple(picked.shape) if isinstance(picked, torch.Tensor) else type(picked).__name__
        raise ValueError(f"The model's output must be a tensor of logits (N, n_classes) or (N, T, "
                         f"vocab) with N={n}, got {shape}.")
    if picked.ndim > 3:  # a map per sample (N, C, H, W): its values, one row per sample
        return picked.reshape(n, -1)
    return picked.reshape(n, 1) if picked.ndim == 1 else picked


def _no_logits_key(out: Mapping, n: int) -> str:
    """The error for a dict output without "logits": its keys, and how to pick the likely one."""
    keys = sorted(map(str, out))[:20]
    likely = [k for k, v in out.items() if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n]
    key = likely[0] if likely else (next(iter(out), "...") if out else "...")
    return (
        f"The model returned a dict with keys {keys} and no tensor under 'logits', the key the "
        "logits are read from by default (other outputs: a tensor, or an object with .logits). "
        f"Pass logits={key!r} to read them from another key, or wrap the model so that it returns "
        f"them, e.g. a module whose forward(x) returns model(x)[{key!r}]."
    )


# ----------------------------------------------------------------------------- vocabulary


def read_vocab(vocab: Any) -> list[str] | None:
    """A vocabulary as a list of token strings indexed by id: from a list, or a tokenizer."""
    if vocab is None:
        return None
    if hasattr(vocab, "get_vocab") and callable(vocab.get_vocab):
        table = vocab.get_vocab()
        size = max(table.values()) + 1 if table else 0
        out = [""] * size
        for token, i in table.items():
            out[int(i)] = str(token)
        return out
    if isinstance(vocab, (str, bytes)) or not isinstance(vocab, (list, tuple)) or not all(
            isinstance(t, str) for t in vocab):
        raise TypeError("vocab must be a list of token strings indexed by token id, or a tokenizer "
                        f"(with get_vocab()), got {type(vocab).__name__}.")
    return list(vocab)


def model_vocab(model: Any) -> list[str] | None:
    """Token strings a model carries as ``model.vocab``, or None."""
    v = getattr(model, "vocab", None)
    if isinstance(v, (list, tuple)) and v and all(isinstance(t, str) for t in v):
        return list(v)
    return None


def vocab_size_of(model: Any, vocab: list[str] | None) -> int | None:
    """The number of token ids the model takes: its input embedding's rows, else len(vocab)."""
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except (NotImplementedError, AttributeError):
            emb = None
        rows = getattr(emb, "num_embeddings", None)
        if isinstance(rows, int):
            return rows if vocab is None else min(rows, len(vocab))
    return len(vocab) if vocab is not None else None


# torch's words for an input that does not fit a layer (shape, channels, dtype, device); a
# RuntimeError without them is the model's own, and passes through as it was raised
_INPUT_MISMATCH = ("shape", "size", "channels", "dimension", "expected", "mat1", "dtype",
                   "input type", "must match", "same device", "stride")


def model_failed(images: torch.Tensor, error: Exception) -> Exception:
    """The error for a model that fails on the first image. torch's input mismatches (wrong
    layout, channel count, size or dtype, reported from deep inside a layer) become a ValueError
    that says what the images looked like; any other error is the model's own and comes back
    unchanged, with a note on where it happened."""
    shape = tuple(images.shape[1:])
    if not any(word in str(error).lower() for word in _INPUT_MISMATCH):
        error.add_note(f"(raised by the model itself on capture's first batch, images of shape "
                       f"{shape} and dtype {images.dtype})")
        return error
    hint = ""
    if images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        hint = (" They look channels-last (N, H, W, C); capture takes (N, C, H, W): pass "
                "images.permute(0, 3, 1, 2).")
    return ValueError(
        f"The model failed on the first image, of shape {shape} and dtype {images.dtype}, with "
        f"{type(error).__name__}: {str(error).rstrip('. ')}.{hint} Check that the images have the layout (C, H, W), "
        "channel count, size and normalisation the model was trained on."
    )
