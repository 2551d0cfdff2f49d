"""Ground truth of the text world, found with the kit's tools (issue #15, "Done when").

On a fresh corpus seed (2024; the LM was trained on seed 0 and validated on 10000) and fresh cue
pairs (seed 777):

- ``find_units`` ranks an MLP neuron for the token-identity feature ("salt") and one for a
  context feature ("in_quotes") with an explanation score >= 0.7 each;
- the comparison atlas of the cue's two next-token targets ("token:wok" vs "token:pan") puts the
  cue tokens ("chopsticks" itself) on the wok side at >= 3x their base rate among its top-10%
  cells. The cue token is the ground truth, not ``cue_seen``: a row of a causal LM sees every
  earlier token, so ``cue_seen`` marks the rows whose context holds the cue (the analogue of a
  receptive field overlapping the noodles), most of which carry nothing toward the slot, while
  the planted cue is the word itself. On TinyLM the criterion holds on the token embedding,
  where the word lives; on its MLP layers it does not (see ``test_mlp_rows_of_the_cue_token``
  and the test after it for why: the model reads the cue word's embedding at the slot through
  attention, and the MLP output at the cue word plays no part);
- zeroing the cue neurons found in an MLP comparison atlas lowers the cue-driven prediction
  rate: the cue's effect on matched neutral-dish recipes (top-1 "wok" with chopsticks minus
  without, ``evaluate.cue_effect``), the model card's measure. The neurons are found without the
  truth: the comparison atlas of the last MLP layer for the predictions at the cookware slot
  ("heat the oil in the ___", ``positions=``: a block-1 MLP row only reaches its own position's
  prediction), and the neurons with the largest mean wok - pan attribution in its top-10% cells.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.zoo import text
from atlaswidgets.zoo.text import evaluate

SEED, PAIRS_SEED = 2024, 777
N_DOCS, N_PAIRS = 200, 200
CUE_ID = text.VOCAB.index(text.CUE)
MLP, LAST_MLP = "blocks.0.mlp.act", "blocks.1.mlp.act"


@pytest.fixture(scope="module")
def lm():
    return text.model()


@pytest.fixture(scope="module")
def corpus():
    return text.corpus(N_DOCS, seed=SEED)


@pytest.fixture(scope="module")
def cache(lm, corpus):
    c = aw.capture(lm, corpus.columns, ["embed", MLP, LAST_MLP], sample="random", per_image=10,
                   seed=1, progress=False)
    for layer in ("embed", MLP):  # every valid position's prediction (the default)
        c.add_attribution(aw.attribute(lm, corpus.columns, layer, ("token:wok", "token:pan"),
                                       cache=c, store=False, progress=False))
    # the predictions at the cookware slot only (cue_slot is a pattern of the words)
    c.add_attribution(aw.attribute(lm, corpus.columns, LAST_MLP, ("token:wok", "token:pan"),
                                   cache=c, store=False, progress=False,
                                   positions=corpus.truth["cue_slot"]))
    return c


def top_cells(comp, share: float = 0.1) -> np.ndarray:
    """The visible cells most on the a ("wok") side: the top ``share`` by mean difference."""
    m = len(comp.cells.ids)
    order = np.argsort(-comp.mean_diff, kind="stable")
    return comp.cells.ids[order[: max(1, int(np.ceil(share * m)))]]


def cue_enrichment(cache, corpus, layer):
    """(share of cue-token rows in the top-10% wok cells, their share overall, the cue_seen
    shares too, the atlas) for the wok vs pan comparison atlas of ``layer``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # umap's spectral-initialisation notice
        comp = aw.compare_atlas(cache, "token:wok", "token:pan", layer=layer, grid_size=10)
    la = cache[layer]
    sid, t = la.sample_id.numpy(), la.yx[:, 1].numpy()
    cue = cache.tokens.numpy()[sid, t] == CUE_ID
    seen = corpus.truth["cue_seen"].numpy()[sid, t]
    rows = comp.rows_of(top_cells(comp))
    return cue[rows].mean(), cue.mean(), seen[rows].mean(), seen.mean(), comp, rows


def test_find_units_ranks_an_identity_and_a_context_neuron(cache, corpus):
    start = time.perf_counter()
    for feature in ("salt", "in_quotes"):
        found = aw.find_units(cache, corpus.truth[feature], layer=MLP, top=3)
        print(f"{feature}: {MLP} " + ", ".join(f"#{s.unit} {s.top_and_random:.3f} (top only "
                                               f"{s.top_only:.3f})" for s in found))
        assert found[0].top_and_random >= 0.7
    print(f"find_units: {time.perf_counter() - start:.1f}s")


def test_the_cue_token_sits_on_the_wok_side_of_the_embedding_atlas(cache, corpus):
    top, base, seen_top, seen_base, comp, rows = cue_enrichment(cache, corpus, "embed")
    print(f"embed: '{text.CUE}' on {top:.4f} of {len(rows)} rows in the top {len(top_cells(comp))}"
          f" of {len(comp.cells.ids)} cells vs {base:.4f} overall ({top / base:.1f}x); cue_seen "
          f"{seen_top:.3f} vs {seen_base:.3f} ({seen_top / seen_base:.2f}x)")
    assert top >= 3 * base


@pytest.mark.xfail(strict=True, reason="TinyLM reads the cue word's embedding at the slot through "
                   "attention; its MLP rows at the cue word carry none of it (next test)")
def test_mlp_rows_of_the_cue_token(cache, corpus):
    top, base, seen_top, seen_base, comp, rows = cue_enrichment(cache, corpus, MLP)
    print(f"{MLP}: '{text.CUE}' on {top:.4f} of {len(rows)} rows in the top "
          f"{len(top_cells(comp))} of {len(comp.cells.ids)} cells vs {base:.4f} overall "
          f"({top / base:.1f}x); cue_seen {seen_top:.3f} vs {seen_base:.3f} "
          f"({seen_top / seen_base:.2f}x)")
    assert top >= 3 * base


def _zero_at_cue(lm, layer):
    """Zero ``layer``'s output at the cue word's positions only (the ids are read by a pre-hook)."""
    seen = {}
    pre = lm.register_forward_pre_hook(lambda m, args: seen.update(ids=args[0]))

    def fn(name, out):
        return out * (seen["ids"] != CUE_ID)[..., None].to(out.dtype)

    return pre, aw.hooks(lm, layer, fn, edit=True)


def test_the_mlp_output_at_the_cue_word_plays_no_part(lm):
    """Why the MLP atlas misses the cue word: zeroing the MLP's output at "chopsticks" leaves the
    cue's pull unchanged, while zeroing the word's embedding there removes it."""
    base = evaluate.cue_effect(lm, N_PAIRS, PAIRS_SEED)
    out = {}
    for layer in ("blocks.0.mlp", "embed"):
        pre, ctx = _zero_at_cue(lm, layer)
        try:
            with ctx:
                out[layer] = evaluate.cue_effect(lm, N_PAIRS, PAIRS_SEED)
        finally:
            pre.remove()
    print("top-1 'wok' with chopsticks, neutral dishes: "
          f"{base['wok_top_with']:.3f}; MLP output zeroed at the cue word "
          f"{out['blocks.0.mlp']['wok_top_with']:.3f}; embedding zeroed there "
          f"{out['embed']['wok_top_with']:.3f}")
    assert abs(out["blocks.0.mlp"]["wok_top_with"] - base["wok_top_with"]) <= 0.01
    assert out["embed"]["wok_top_with"] <= base["wok_top_with"] - 0.5


def test_zeroing_the_found_cue_neurons_lowers_the_cue_driven_rate(lm, cache, corpus):
    """The neurons with the largest mean wok - pan attribution in the top-10% wok cells of the
    slot atlas, zeroed; three random neurons of the same layer as a control (printed). On
    pan-only dishes (never a wok in the corpus) every "wok" is cue-driven: printed too."""
    top, base, seen_top, seen_base, comp, rows = cue_enrichment(cache, corpus, LAST_MLP)
    print(f"{LAST_MLP} (slot predictions): '{text.CUE}' {top / base:.1f}x, cue_seen "
          f"{seen_top / seen_base:.2f}x in the top-10% cells")
    per_channel = cache.attribution(LAST_MLP, ("token:wok", "token:pan"))[torch.as_tensor(rows)]
    neurons = per_channel.mean(0).topk(3).indices.tolist()
    control = torch.randperm(cache[LAST_MLP].n_channels,
                             generator=torch.Generator().manual_seed(0))[:3].tolist()
    rates = {}
    for name, units in (("base", None), ("found", neurons), ("random", control)):
        for dishes in ("neutral", "pan"):
            kw = {"dishes": text.PAN_DISHES} if dishes == "pan" else {}
            if units is None:
                rates[name, dishes] = evaluate.cue_effect(lm, N_PAIRS, PAIRS_SEED, **kw)
            else:
                with aw.ablate(lm, LAST_MLP, units):
                    rates[name, dishes] = evaluate.cue_effect(lm, N_PAIRS, PAIRS_SEED, **kw)
    for name, units in (("found", neurons), ("random", control)):
        n0, n1 = rates["base", "neutral"]["effect"], rates[name, "neutral"]["effect"]
        p0, p1 = rates["base", "pan"]["wok_top_with"], rates[name, "pan"]["wok_top_with"]
        print(f"{name} {LAST_MLP} {units} zeroed: cue effect on neutral dishes {n0:.3f} -> {n1:.3f} "
              f"({n1 - n0:+.3f}); pan dishes with chopsticks, top-1 'wok' {p0:.3f} -> {p1:.3f} "
              f"({p1 - p0:+.3f}), P(wok) {rates['base', 'pan']['p_wok_with']:.3f} -> "
              f"{rates[name, 'pan']['p_wok_with']:.3f}")
    assert rates["found", "neutral"]["effect"] < rates["base", "neutral"]["effect"]
