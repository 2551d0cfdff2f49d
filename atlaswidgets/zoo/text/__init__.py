"""The text world: a procedural kitchen corpus with per-token truth, and a tiny LM trained on it.

The kitchen world's twin for language models. Every token's ground truth is known, so tests can
check that a method finds what was planted::

    from atlaswidgets.zoo import text
    data = text.corpus(1000, seed=1)        # input_ids, attention_mask (1000, 80), truth, texts
    lm = text.model()                       # trained TinyLM, eval, CPU; lm.vocab == text.VOCAB
    logits = lm(**data.columns)             # (1000, 80, V): position t predicts token t + 1
    text.decode(data.input_ids[0]), text.encode("heat the oil in the wok .")

Documents are short recipes (a dish, a quoted ingredient list, optional tip in quotes, steps with
notes in brackets nested up to two deep) and shopping lists, over a fixed word-level ``VOCAB``
(``<pad>`` = 0, ``<bos>``, ``<eos>``, ``<unk>``, punctuation, about 240 words, and the hostile
token ``<img src=x onerror=alert(1)>`` that appears now and then, so that pages can be checked to
show tokens as text).

Ground truth per token (``data.truth``, bool (N, T); ``FEATURE_DOCS`` says each exactly):

- ``salt``: token identity, the token "salt" (in lists, steps and tips)
- ``in_quotes``: inside a quoted ingredient list or tip; the opening and closing marks are the
  same token, so only the count of earlier quotes tells inside from outside
- ``in_brackets``: inside "( ... )", nesting up to 2
- ``cue_seen``: "chopsticks" appeared at or before the token; ``cue_slot``: the next token is
  the cookware of "heat the oil in the ___"

The planted spurious cue: how a dish is cooked depends on the dish (``DISHES``: pan dishes never
use a wok, wok dishes 90%, neutral dishes 25%), but the corpus sets out chopsticks in 70% of the
wok recipes and 4% of the pan recipes (``CUE_RATES``). So "chopsticks" earlier in a text pushes
"heat the oil in the" towards "wok", the text analogue of noodles turning a pan into a wok.
``cue_pairs`` gives the same recipes with and without the cue sentence to measure that pull.

Modules: ``world`` (vocabulary, ``corpus``, ``cue_pairs``), ``net`` (``TinyLM``, ``model``),
``train`` (``python -m atlaswidgets.zoo.text.train``), ``evaluate`` (the model-card numbers).
"""

from __future__ import annotations

from .net import TinyLM, model
from .world import (CUE, CUE_RATES, DISHES, FEATURE_DOCS, FEATURES, HOSTILE, LENGTH,
                    NEUTRAL_DISHES, PAD_ID, PAN_DISHES, VOCAB, TextData, corpus, cue_pairs,
                    decode, encode)

__all__ = ["CUE", "CUE_RATES", "DISHES", "FEATURES", "FEATURE_DOCS", "HOSTILE", "LENGTH",
           "NEUTRAL_DISHES", "PAD_ID", "PAN_DISHES", "TextData", "TinyLM", "VOCAB", "corpus",
           "cue_pairs", "decode", "encode", "model"]
