"""Spatial sampling: which positions of a layer's output become cache rows, and what the hook keeps.

The "random" policy's positions of sample ``i`` depend only on ``(seed, i)`` and the grid size,
through splitmix64 computed with int64 tensor ops (multiplication wraps the same way on CPU and
CUDA), so they are the same for any batch size, after a resume, and on any device.

Sequences. A layer output (N, T, D) of a text input is a sequence: each valid token (attention mask
1) is a position, numbered by its index among the sample's valid tokens, so padding never becomes
a row and neither the padding side nor the padded length changes which tokens are picked: "random"
keys token v of sample i by hash(hash(seed) + i, v), exactly as it keys grid position v, and takes
the min(per_image, valid tokens) smallest. "all" takes every valid token, "mean" their mean.

ViT blocks. A layer output (N, T, D) of an image input is a ViT block: the first ``prefix_tokens``
tokens (CLS, registers) are dropped and the rest, a perfect square h * w of patch tokens in row-major
order, viewed as an (N, D, h, w) grid, so everything downstream treats it as a conv layer's output.
Without ``prefix_tokens``, T must be a perfect square (all patches); T - k a square for a small k
is refused with the prefix_tokens=k to pass.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["random_positions", "Sampler", "check_output", "receptive_field", "LIST_HINT"]

LIST_HINT = "List every layer name with `[n for n, _ in model.named_modules()]`."

# ----------------------------------------------------------------------------- random positions

_M64 = (1 << 64) - 1


def _signed(v: int) -> int:
    v &= _M64
    return v - (1 << 64) if v >= 1 << 63 else v


_GOLDEN, _MUL1, _MUL2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _splitmix64_int(x: int) -> int:
    """splitmix64 of a Python int (the reference the tensor version must match)."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return _signed(z ^ (z >> 31))


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    # logical shift right on int64: torch's >> is arithmetic, so mask the sign-extended bits
    t = z >> s
    t &= (1 << (64 - s)) - 1
    return t


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 on an int64 tensor (a new tensor; in-place steps keep allocations few)."""
    z = z + _GOLDEN
    z ^= _shr(z, 30)
    z *= _MUL1
    z ^= _shr(z, 27)
    z *= _MUL2
    z ^= _shr(z, 31)
    return z


def random_positions(seed: int, sample_ids: torch.Tensor, n_positions: int, k: int) -> torch.Tensor:
    """The "random" policy's positions: k of n_positions per sample, ascending.

    sample_ids : int64 tensor, shape (B,), global sample indices
    Returns int64 tensor, shape (B, k), on sample_ids' device. Each sample's positions are the k
    smallest keys hash(hash(seed) + sample, position); nothing else enters. splitmix64 is a
    bijection, so a sample's keys never tie and CPU and CUDA pick the same positions.
    """
    if k >= n_positions:
        return torch.arange(n_positions, device=sample_ids.device).expand(len(sample_ids), -1)
    base = _splitmix64(sample_ids.to(torch.int64) + _splitmix64_int(seed))
    keys = _splitmix64(base[:, None] + torch.arange(n_positions, device=sample_ids.device))
    pos = keys.topk(k, dim=1, largest=False, sorted=False).indices
    return pos.sort(dim=1).values


# ----------------------------------------------------------------------------- the hook's work


def check_output(name: str, out: Any, policy: str) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"Layer {name!r} returns {type(out).__name__}, not a tensor; capture needs a layer "
            f"whose output is a tensor of shape (N, C, H, W) or (N, T, D). Pick another layer. {LIST_HINT}"
        )
    if out.ndim in (3, 4) or (out.ndim == 2 and policy == "mean"):
        return
    shape = "(" + ", ".join(["N"] + [str(v) for v in out.shape[1:]]) + ")"
    if policy == "mean":
        raise ValueError(f"Layer {name!r} outputs shape {shape}, but sample='mean' needs an "
                         "(N, C, H, W), (N, T, D) or (N, C) output; choose another layer.")
    if out.ndim == 2:
        fix = "use sample='mean' (it keeps one row per sample), or choose a convolutional layer"
    else:
        fix = "choose a convolutional layer (or, for (N, C) outputs, use sample='mean')"
    raise ValueError(
        f"Layer {name!r} outputs shape {shape}, but sample={policy!r} needs a "
        f"(N, C, H, W) or (N, T, D) output to sample positions from: {fix}."
    )


class Sampler:
    """The hook function of capture(): validates a layer's output and keeps only what is needed.

    mode "measure": returns (output shape, sum of channels at the centre position), with autograd
    mode "rows": returns (rows, positions) with rows of shape (B * k, C) in the cache dtype
    """

    def __init__(self, policy: str, per_image: int, seed: int, dtype: torch.dtype,
                 images: bool = True, prefix_tokens: int | None = None):
        self.policy, self.per_image, self.seed, self.dtype = policy, per_image, seed, dtype
        # images: (N, T, D) outputs are ViT blocks (patch grids); else sequences of tokens
        self.images, self.prefix_tokens = images, prefix_tokens
        self.mask: torch.Tensor | None = None  # (B, T) bool of valid tokens, on the device
        self.last: torch.Tensor | None = None  # the latest output, as a grid for ViT blocks
        self.mode = "rows"
        self.start = 0
        self.calls: dict[str, int] = {}
        # (h, w, device) -> positions, or for tokens ("tokens", B, T, device) -> (batch, token, valid
        # index) of the rows: layers of a model spread over GPUs each need theirs there
        self._positions: dict[tuple, Any] = {}
        # layer name -> a (B * k, C) view of a preallocated buffer to write the rows into, if any
        self.targets: dict[str, torch.Tensor] = {}

    def begin(self, mode: str, start: int) -> None:
        self.mode, self.start = mode, start
        self.calls.clear()
        self._positions.clear()
        self.targets = {}
        self.mask = None

    def __call__(self, name: str, out: Any) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] > 1:
            raise ValueError(
                f"Layer {name!r} runs more than once in one forward pass (the module is reused), "
                "so its output is ambiguous. Capture a layer that runs once, e.g. a wrapper or "
                f"the next layer. {LIST_HINT}"
            )
        check_output(name, out, self.policy)
        if out.ndim == 3 and self.images:
            out = vit_grid(name, out, self.prefix_tokens)
        self.last = out
        if out.ndim == 3:
            if self.mask is not None and out.shape[:2] != self.mask.shape:
                raise ValueError(
                    f"Layer {name!r} outputs shape {tuple(out.shape)}, but the input has "
                    f"{self.mask.shape[1]} tokens per sample, so its positions cannot be matched to "
                    "tokens and the attention mask. Capture a layer with one position per input token.")
            if self.mode == "measure":
                return tuple(out.shape), None
            return self._token_rows(out.detach())
        if self.mode == "measure":
            if out.ndim != 4:
                return tuple(out.shape), None
            h, w = out.shape[2:]
            return tuple(out.shape), out[:, :, h // 2, w // 2].sum()
        rows, pos = self._rows(name, out.detach())
        target = self.targets.get(name)
        if target is None:
            return rows, pos
        if rows is None:  # "all" into a buffer: the one transposing copy goes straight there
            b, c, h, w = out.shape
            target.view(b, h, w, c).copy_(out.detach().permute(0, 2, 3, 1))
        else:
            target.copy_(rows)
        return target, pos

    def _token_rows(self, out: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(rows (R, D) in the cache dtype, (batch index (R,), valid-token index (R,)) or None for
        "mean"), rows ordered by sample, then token."""
        b, t, _ = out.shape
        if self.policy == "mean":
            mask = self.mask if self.mask is not None else torch.ones(b, t, dtype=torch.bool, device=out.device)
            m = mask.to(torch.float32)[..., None]
            return ((out.float() * m).sum(1) / m.sum(1)).to(self.dtype), None
        # the picked tokens depend only on the batch's mask: every layer of the pass shares them
        picked = self._positions.get(("tokens", b, t, out.device))
        if picked is None:
            picked = self._positions[("tokens", b, t, out.device)] = self._token_positions(b, t, out.device)
        bi, ti, vi = picked
        return out[bi, ti].to(self.dtype), (bi, vi)

    def _token_positions(self, b: int, t: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(batch index, token index, valid-token index) of each row, (R,) int64 each."""
        mask = self.mask.to(device) if self.mask is not None else torch.ones(b, t, dtype=torch.bool, device=device)
        index = mask.long().cumsum(1) - 1  # each token's index among its sample's valid tokens
        if self.policy == "all":
            bi, ti = mask.nonzero(as_tuple=True)
        else:
            ids = torch.arange(self.start, self.start + b, device=device)
            base = _splitmix64(ids + _splitmix64_int(self.seed))
            keys = _splitmix64(base[:, None] + index.clamp_min(0))
            keys.masked_fill_(~mask, torch.iinfo(torch.int64).max)
            pos = keys.topk(min(self.per_image, t), dim=1, largest=False, sorted=False).indices
            pos = pos.masked_fill(~mask.gather(1, pos), t).sort(dim=1).values  # padding last
            keep = pos < t
            bi = torch.arange(b, device=device)[:, None].expand_as(pos)[keep]
            ti = pos[keep]
        return bi, ti, index[bi, ti]

    def _rows(self, name: str, out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(rows (B * k, C) in the cache dtype, positions (B, k) or None); rows None for "all"
        with a target, which is filled directly."""
        if out.ndim == 2:  # "mean" of an (N, C) output: the rows are the output
            return out.to(self.dtype, copy=True), None
        b, c, h, w = out.shape
        if self.policy == "mean":
            return out.mean(dim=(2, 3), dtype=torch.float32).to(self.dtype), None
        if self.policy == "all":
            if name in self.targets:
                return None, None
            # one copy, to (B, H, W, C) layout in the cache dtype; copy=True also protects the rows
            # from in-place ops that later modify a channels_last output
            rows = out.permute(0, 2, 3, 1).to(self.dtype, copy=True, memory_format=torch.contiguous_format)
            return rows.reshape(b * h * w, c), None
        pos = self._positions.get((h, w, out.device))
        if pos is None:
            ids = torch.arange(self.start, self.start + b, device=out.device)
            pos = random_positions(self.seed, ids, h * w, self.per_image)
            self._positions[(h, w, out.device)] = pos
        # advanced indexing copies only the k sampled C-vectors of each sample
        picked = out.flatten(2).transpose(1, 2)[torch.arange(b, device=out.device)[:, None], pos]
        return picked.to(self.dtype).reshape(-1, c), pos


def vit_grid(name: str, out: torch.Tensor, prefix_tokens: int | None) -> torch.Tensor:
    """The patch tokens of a ViT block's output (N, T, D) as an (N, D, h, w) view (see module doc)."""
    n, t, d = out.shape
    if prefix_tokens is None:
        side = math.isqrt(t)
        if side * side != t:
            k = next((k for k in range(1, 9) if t - k > 0 and math.isqrt(t - k) ** 2 == t - k), None)
            fix = (f"If the first {k} token(s) are CLS/register tokens, pass prefix_tokens={k}"
                   if k is not None else "Pass prefix_tokens=k, the number of leading non-patch tokens")
            raise ValueError(f"Layer {name!r} outputs {t} tokens per image (shape {tuple(out.shape)}), "
                             f"not a square grid of patches. {fix}.")
        prefix_tokens = 0
    side = math.isqrt(max(t - prefix_tokens, 0))
    if prefix_tokens >= t or side * side != t - prefix_tokens:
        raise ValueError(f"Layer {name!r} outputs {t} tokens per image; with prefix_tokens="
                         f"{prefix_tokens} the other {t - prefix_tokens} are not a square grid of "
                         "patches. Pass the number of leading CLS/register tokens as prefix_tokens.")
    return out[:, prefix_tokens:].transpose(1, 2).reshape(n, d, side, side)


def receptive_field(grad: torch.Tensor | None, input_hw: tuple[int, int]) -> tuple[int, int]:
    """Height and width of the box where |grad| exceeds 1% of its max (whole input when zero)."""
    if grad is None:
        return input_hw
    mag = grad.detach().abs().float().sum(dim=(0, 1))
    top = mag.max()
    if not torch.isfinite(top) or top <= 0:
        return input_hw
    mask = mag > 0.01 * top
    ys = mask.any(dim=1).nonzero().flatten()
    xs = mask.any(dim=0).nonzero().flatten()
    return int(ys[-1] - ys[0] + 1), int(xs[-1] - xs[0] + 1)
