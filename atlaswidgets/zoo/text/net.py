"""TinyLM, the small causal transformer trained on the text world, and the loader of its weights.

Module map (names to capture; N documents, T tokens, D = d_model, M = 4 D MLP neurons):

==================  =========================================  ============
module              what                                       output
==================  =========================================  ============
embed               token embedding                            (N, T, D)
blocks.i            block i: x + attn(ln1 x), then + mlp(ln2)   (N, T, D) residual stream
blocks.i.attn       causal multi-head self-attention           (N, T, D)
blocks.i.mlp.act    GELU after the first MLP layer: neurons    (N, T, M)
blocks.i.mlp        MLP output written into the stream         (N, T, D)
ln_f                final layer norm                           (N, T, D)
head                unembedding (untied, no bias)              (N, T, V) logits
==================  =========================================  ============

``forward(input_ids, attention_mask=None)`` returns the logits as a plain tensor (N, T, V):
position t predicts token t + 1. Inputs are right-padded rows as ``text.corpus`` makes them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ...cache.checks import int_in_range
from .world import LENGTH, VOCAB

WEIGHTS = Path(__file__).with_name("tiny_lm.safetensors")
FACTS = Path(__file__).with_name("tiny_lm.json")


class Attention(nn.Module):
    """Causal multi-head self-attention; padded keys (mask 0) are never attended to."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.n_heads)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        y = scores.softmax(-1) @ v                       # (n, heads, t, d_head)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class MLP(nn.Module):
    """fc_in -> act (GELU; its output is the neurons, (N, T, d_mlp)) -> fc_out."""

    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_mlp)
        self.act = nn.GELU()
        self.fc_out = nn.Linear(d_mlp, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    """Pre-norm transformer block; its output is the residual stream after it."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_mlp)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A small GPT-style language model over ``text.VOCAB``.

    vocab_size, d_model, n_layers, n_heads : sizes (d_model divisible by n_heads)
    max_len : most tokens per row (learned positions)
    Input: input_ids (N, T) int64 in [0, vocab_size), T <= max_len; attention_mask (N, T) of 0/1
        (optional; padding may only follow the real tokens of a row).
    Output: logits, tensor (N, T, vocab_size).
    """

    def __init__(self, vocab_size: int = len(VOCAB), d_model: int = 96, n_layers: int = 2,
                 n_heads: int = 4, max_len: int = LENGTH):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}).")
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, 4 * d_model) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.vocab: list[str] = list(VOCAB) if vocab_size == len(VOCAB) else [
            str(i) for i in range(vocab_size)]

    def _check(self, input_ids, attention_mask):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (
                torch.int64, torch.int32) or input_ids.ndim != 2:
            got = (f"{input_ids.dtype} tensor of shape {tuple(input_ids.shape)}"
                   if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__)
            raise TypeError(f"input_ids must be an int64 tensor of shape (N, T), got {got}. "
                            "Make them with text.corpus(...) or text.encode(...).")
        n, t = input_ids.shape
        if t > self.max_len:
            raise ValueError(f"rows have {t} tokens; this model reads at most {self.max_len}.")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= len(self.vocab)):
            raise ValueError(f"token ids must lie in 0..{len(self.vocab) - 1} (the vocabulary), "
                             f"got ids from {int(input_ids.min())} to {int(input_ids.max())}.")
        if attention_mask is None:
            return torch.ones_like(input_ids, dtype=torch.bool)
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else (
                type(attention_mask).__name__)
            raise ValueError(f"attention_mask must be a tensor shaped like input_ids "
                             f"{tuple(input_ids.shape)}, got {shape}.")
        if attention_mask.numel() and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token).")
        if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            # positions count from the row's start, so left padding would shift every token
            raise ValueError("attention_mask has padding before tokens; TinyLM reads right-padded "
                             "rows (tokens first, then <pad>), as text.corpus makes them. With a "
                             "tokenizer, set padding_side='right'.")
        return attention_mask.bool()

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self._check(input_ids, attention_mask).to(input_ids.device)
        t = input_ids.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
        # each query sees earlier real tokens, and always itself (so a padded row has no empty
        # softmax and gives finite, ignorable numbers)
        allowed = (causal[None] & mask[:, None, :]) | torch.eye(t, dtype=torch.bool,
                                                                device=input_ids.device)[None]
        x = self.embed(input_ids) + self.pos.weight[:t]
        for block in self.blocks:
            x = block(x, allowed)
        return self.head(self.ln_f(x))

    # ---- what neurons write ----

    @property
    def unembed(self) -> torch.Tensor:
        """Unembedding matrix, shape (V, d_model): the ``head`` weights (a copy, no gradient)."""
        return self.head.weight.detach().clone()

    def _layer(self, layer_index: int) -> Block:
        layer_index = int_in_range(layer_index, "layer_index", 0, len(self.blocks) - 1)
        return self.blocks[layer_index]

    def neuron_output_weights(self, layer_index: int) -> torch.Tensor:
        """What each MLP neuron of block ``layer_index`` adds to the stream: (d_mlp, d_model).

        Row j is the vector neuron j writes per unit of activation (a copy: editing it leaves
        the model alone; to ablate a neuron, hook ``blocks.i.mlp.act``).
        """
        return self._layer(layer_index).mlp.fc_out.weight.detach().T.clone()

    @torch.no_grad()
    def neuron_logit_effect(self, layer_index: int) -> torch.Tensor:
        """Direct logit effect per unit of neuron activation: (d_mlp, V).

        Output weights times the final layer norm's gain, through the unembedding (the norm's
        scaling by the stream's size is left out, so compare tokens within a neuron's row).
        """
        w = self.neuron_output_weights(layer_index) * self.ln_f.weight.detach()
        return w @ self.unembed.T

    def neuron_top_tokens(self, layer_index: int, neuron: int, k: int = 10) -> dict:
        """{"promotes": [(token, effect)...], "suppresses": [...]}: k each, strongest first."""
        effect = self.neuron_logit_effect(layer_index)
        neuron = int_in_range(neuron, "neuron", 0, len(effect) - 1)
        row = effect[neuron]
        k = min(int(k), len(row))
        up, down = row.topk(k), (-row).topk(k)
        return {"promotes": [(self.vocab[i], float(v)) for v, i in zip(up.values, up.indices)],
                "suppresses": [(self.vocab[i], -float(v))
                               for v, i in zip(down.values, down.indices)]}


def model(path: str | Path | None = None) -> TinyLM:
    """The trained TinyLM from safetensors, in eval mode on the CPU (no network).

    path : weights file; default the one shipped in the package (written by
        ``python -m atlaswidgets.zoo.text.train``).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"no TinyLM weights at {path}. Train them with "
                                "`python -m atlaswidgets.zoo.text.train` (a few minutes on a CPU).")
    state = load_file(str(path), device="cpu")
    vocab_size, d_model = state["embed.weight"].shape
    n_layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    with safe_open(str(path), framework="pt") as f:  # sizes the tensors cannot tell
        meta = f.metadata() or {}
    net = TinyLM(int(vocab_size), int(d_model), n_layers, int(meta.get("n_heads", 4)),
                 int(state["pos.weight"].shape[0]))
    net.load_state_dict(state)
    return net.eval()


def training_facts(path: str | Path | None = None) -> dict:
    """The JSON the training script wrote beside the weights (seeds, sizes, loss, seconds)."""
    return json.loads(Path(path if path is not None else FACTS).read_text())
