"""Measure what TinyLM learned: loss, next-token accuracy, the planted cue, findable neurons.

    python -m atlaswidgets.zoo.text.evaluate [--n 1000] [--seed 777]

These are the numbers of the model card, measured on a fresh corpus seed (not the training seed
0 or the validation seed ``VAL_OFFSET``).
"""

from __future__ import annotations

import json

import torch
from torch import nn

from ...cache.checks import one_of
from ...cache.hooks import eval_mode, hooks
from ..weights import card_parser
from .train import evaluate_loss
from .world import NEUTRAL_DISHES, PAN_DISHES, VOCAB, TextData, corpus, cue_pairs

WOK, PAN = VOCAB.index("wok"), VOCAB.index("pan")


@torch.no_grad()
def slot_probs(net: nn.Module, data: TextData, slots: torch.Tensor) -> torch.Tensor:
    """Next-token probabilities at one position per row: slots (N,) int64 -> (N, V)."""
    with eval_mode(net):
        logits = net(data.input_ids, data.attention_mask)
    return logits[torch.arange(len(slots)), slots].softmax(-1)


def cue_effect(net: nn.Module, n: int = 500, seed: int = 777,
               dishes: list[str] | None = None) -> dict:
    """The cue's pull on matched recipes: the same text with and without "chopsticks".

    At "heat the oil in the ___", how often the model's top next token is "wok" (and its mean
    probability of "wok") with the cue sentence and without it. dishes: see ``cue_pairs``.
    """
    with_cue, without, slots = cue_pairs(n, seed, dishes)
    out = {"n": n, "seed": seed, "dishes": "neutral" if dishes is None else list(dishes)}
    for key, data, col in (("with", with_cue, 0), ("without", without, 1)):
        p = slot_probs(net, data, slots[:, col])
        top = p.argmax(-1)
        out[f"wok_top_{key}"] = float((top == WOK).float().mean())
        out[f"pan_top_{key}"] = float((top == PAN).float().mean())
        out[f"p_wok_{key}"] = float(p[:, WOK].mean())
    out["effect"] = out["wok_top_with"] - out["wok_top_without"]
    return out


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of each column: scores (n, k) float, labels (n,) bool -> (k,).

    The chance that a random positive scores above a random negative (ties count half).
    """
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative tokens; use more documents.")
    # Mann-Whitney U from average ranks, ties sharing them (identical contexts give identical
    # activations): in each sorted column a value's rank is the middle of its run of equals
    ordered, order = scores.float().T.sort(dim=1)                      # (k, n)
    k, n = ordered.shape
    pos = torch.arange(n).expand(k, n)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, 0).cummax(dim=1).values
    last = torch.where(ends, pos, n - 1).flip(1).cummin(dim=1).values.flip(1)
    ranks = (first + last).double() / 2 + 1
    u = (ranks * labels[order]).sum(1) - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).float()


def correlation(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each column with the labels: scores (n, k), labels (n,) -> (k,)."""
    y = labels.double()
    if float(y.std()) == 0:
        raise ValueError("correlation needs both positive and negative tokens; use more documents.")
    x = scores.double()
    x, y = x - x.mean(0), y - y.mean()
    denom = (x.norm(dim=0) * y.norm()).clamp(min=1e-12)  # a neuron that never varies scores 0
    return ((x * y[:, None]).sum(0) / denom).float()


def top_and_random(scores: torch.Tensor, labels: torch.Tensor, n: int = 20,
                   seed: int = 0) -> torch.Tensor:
    """Explanation score as in "Language models can explain neurons": per column, the correlation
    of the 0/1 truth with the activations on that column's n strongest tokens plus n random ones.

    scores (tokens, k), labels (tokens,) bool -> (k,); a column whose chosen tokens all share one
    label scores 0. The random tokens are the same for every column (seeded).
    """
    m = len(scores)
    if m < 2 * n:
        raise ValueError(f"top_and_random needs at least {2 * n} tokens, got {m}; use more documents.")
    rand = torch.randperm(m, generator=torch.Generator().manual_seed(seed))[:n]
    idx = torch.cat([scores.topk(n, dim=0).indices, rand[:, None].expand(n, scores.shape[1])])
    x = scores.gather(0, idx).double()                              # (2n, k)
    y = labels[idx].double()
    x, y = x - x.mean(0), y - y.mean(0)
    denom = x.norm(dim=0) * y.norm(dim=0)
    return torch.where(denom > 0, (x * y).sum(0) / denom.clamp(min=1e-12), 0.0).float()


_METRICS = {"auroc": auroc, "correlation": correlation, "top_and_random": top_and_random}


@torch.no_grad()
def neuron_activations(net: nn.Module, data: TextData) -> dict[str, torch.Tensor]:
    """Every MLP neuron's activation on the real tokens: {"blocks.i.mlp.act": (tokens, d_mlp)}."""
    names = [f"blocks.{i}.mlp.act" for i in range(len(net.blocks))]
    real = data.attention_mask.bool()
    with eval_mode(net), hooks(net, names) as rec:
        net(data.input_ids, data.attention_mask)
        return {k: v[real] for k, v in rec.items()}


def neuron_scores(net: nn.Module, data: TextData, feature: str, metric: str = "auroc",
                  acts: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """How well every MLP neuron's activation matches ``data.truth[feature]``, over real tokens.

    metric : "auroc", "correlation" (Pearson, activation vs the 0/1 truth, all tokens) or
        "top_and_random" (Pearson on each neuron's 20 strongest and 20 random tokens)
    acts : ``neuron_activations(net, data)`` if already computed (scoring many features)
    Returns {"blocks.i.mlp.act": tensor (d_mlp,)} for each block.
    """
    if feature not in data.truth:
        raise ValueError(f"unknown feature {feature!r}; the corpus has {list(data.truth)}.")
    one_of(metric, "metric", _METRICS)
    acts = neuron_activations(net, data) if acts is None else acts
    labels = data.truth[feature][data.attention_mask.bool()]
    return {k: _METRICS[metric](a, labels) for k, a in acts.items()}


def best_neuron(net: nn.Module, data: TextData, feature: str, metric: str = "auroc",
                acts: dict[str, torch.Tensor] | None = None) -> dict:
    """The MLP neuron whose activation best matches ``feature``: {feature, metric, layer, neuron, score}."""
    best = {"feature": feature, "metric": metric, "score": -float("inf")}
    for layer, scores in neuron_scores(net, data, feature, metric, acts).items():
        j = int(scores.argmax())
        if float(scores[j]) > best["score"]:
            best.update(layer=layer, neuron=j, score=float(scores[j]))
    return best


def report(net: nn.Module, n: int = 1000, seed: int = 777) -> dict:
    """All model-card numbers on ``corpus(n, seed)`` and ``cue_pairs(n // 2, seed)``."""
    data = corpus(n, seed)
    probe = corpus(min(n, 400), seed)  # neuron search on fewer tokens: it ranks every neuron
    acts = neuron_activations(net, probe)
    return {"seed": seed, "n": n, **{k: v for k, v in evaluate_loss(net, data).items()},
            "cue_neutral": cue_effect(net, n // 2, seed),
            "cue_pan_dishes": cue_effect(net, n // 2, seed, PAN_DISHES),
            "neurons": [best_neuron(net, probe, f, m, acts) for m in ("auroc", "correlation", "top_and_random")
                        for f in ("salt", "in_quotes", "in_brackets", "cue_seen")]}


def main(argv: list[str] | None = None) -> None:
    from .net import model

    parser = card_parser("python -m atlaswidgets.zoo.text.evaluate", __doc__.splitlines()[0], n=1000)
    args = parser.parse_args(argv)
    rep = report(model(args.weights), args.n, args.seed)
    if args.json:
        print(json.dumps(rep, indent=1))
        return
    print(f"corpus({args.n}, seed={args.seed}): loss {rep['loss']:.3f}, next-token accuracy "
          f"{rep['accuracy']:.3f} over {rep['tokens']} tokens")
    for key, what in (("cue_neutral", f"neutral dishes {NEUTRAL_DISHES[:3]}..."),
                      ("cue_pan_dishes", "pan-only dishes")):
        c = rep[key]
        print(f"cue on {c['n']} matched recipes, {what}: top-1 'wok' {c['wok_top_with']:.3f} with "
              f"chopsticks vs {c['wok_top_without']:.3f} without (P(wok) {c['p_wok_with']:.3f} vs "
              f"{c['p_wok_without']:.3f})")
    for b in rep["neurons"]:
        print(f"best neuron for {b['feature']} by {b['metric']}: {b['layer']} #{b['neuron']}, "
              f"{b['score']:.3f}")


if __name__ == "__main__":
    main()
