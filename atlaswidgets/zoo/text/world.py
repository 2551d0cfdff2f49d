"""The text world's generator: vocabulary, documents, per-token truth, ``corpus`` and matched cue pairs.

Document i of a corpus is a pure function of ``np.random.default_rng([seed, i])``: it is first
sampled as a plain spec (a dict of choices), then rendered to tokens. Rendering the same spec with
and without the cue sentence gives the matched pairs that measure the cue (``cue_pairs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from ...cache.checks import int_at_least, is_int

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
# A token that looks like HTML and appears now and then, so that widget tests can check that
# tokens reach the page as text. It contains spaces: ``encode`` matches it before splitting words.
HOSTILE = "<img src=x onerror=alert(1)>"
CUE = "chopsticks"
LENGTH = 80  # tokens per row, <bos> and <eos> included; documents never exceed it

_PUNCT = [".", ",", ":", ";", '"', "(", ")", "!"]
_PAN_DISHES = ["omelette", "pancakes", "steak", "frittata", "crepes", "hash", "burgers"]
_WOK_DISHES = ["chow", "mein", "stir", "fry", "noodles"]  # dish names: "stir fry", "chow mein", ...
_NEUTRAL_DISHES = ["fried", "rice", "vegetables", "chicken", "mushrooms", "tofu", "prawns",
                   "potatoes", "beef", "greens", "peppers"]
_INGREDIENTS = ["salt", "pepper", "oil", "butter", "garlic", "onion", "ginger", "soy sauce",
                "egg", "eggs", "flour", "milk", "sugar", "tomato", "tomatoes", "carrot", "carrots",
                "cabbage", "spinach", "leek", "lemon", "lime", "chilli", "honey", "vinegar",
                "cheese", "cream", "basil", "parsley", "thyme", "paprika", "cumin", "noodles",
                "rice", "chicken", "beef", "pork", "tofu", "prawns", "mushrooms", "potatoes",
                "peppers", "greens", "beans", "peas", "corn", "bread", "stock", "water", "wine",
                "sesame seeds", "spring onions", "bacon", "ham", "apple", "nuts", "oats"]
_COOKWARE = ["pan", "wok", "pot", "saucepan", "oven", "tray", "bowl", "kettle", "dish", "jug"]
_VERBS = ["heat", "warm", "add", "chop", "slice", "dice", "stir", "season", "cook", "boil",
          "simmer", "bake", "serve", "mix", "whisk", "pour", "fold", "toss", "grate", "wash",
          "peel", "drain", "set", "lay", "put", "keep", "buy", "need", "do", "burn", "taste",
          "rest", "cover", "melt", "crack", "beat", "fry"]
_WORDS = ["recipe", "ingredients", "shopping", "list", "tip", "note", "source", "the", "a", "an",
          "in", "on", "with", "for", "and", "or", "of", "to", "until", "it", "them", "out", "you",
          "will", "not", "too", "at", "from", "into", "over", "about", "minutes", "hour", "hours",
          "golden", "soft", "tender", "crisp", "brown", "hot", "warm", "cold", "thick", "smooth",
          "fresh", "fine", "well", "gently", "often", "low", "medium", "high", "heat", "table",
          "plates", "bowls", "spoon", "fork", "knife", "board", "lid", "side", "top", "taste",
          "pinch", "cup", "cups", "grams", "tablespoon", "teaspoon", "web", "family", "book",
          "optional", "more", "less", "little", "all", "each", "every", "first", "then", "now",
          "is", "are", "be", "best", "good", "quick", "easy", "dinner", "lunch", "breakfast",
          "tonight", "friends", "two", "four", "six", "people", "makes", "enough", "for", "this",
          "your", "own", "new", "if", CUE, "glasses", "napkins"]
_NUMBERS = ["1", "2", "3", "4", "5", "6", "8", "10", "12", "15", "20", "25", "30", "40", "45", "60"]


def _unique(words):
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


VOCAB: list[str] = _unique([PAD, BOS, EOS, UNK, *_PUNCT, *(w for i in _INGREDIENTS for w in i.split()), *_COOKWARE, *_VERBS,
                            *_WORDS, *_PAN_DISHES, *_WOK_DISHES, *_NEUTRAL_DISHES, *_NUMBERS,
                            HOSTILE])
_INDEX = {t: i for i, t in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID, UNK_ID = (_INDEX[t] for t in (PAD, BOS, EOS, UNK))

# Dishes and the honest chance that their recipe heats the oil in a wok rather than a pan.
DISHES: dict[str, float] = {
    **{d: 0.0 for d in ("omelette", "pancakes", "steak", "frittata", "crepes", "hash",
                        "burgers")},
    **{d: 0.9 for d in ("stir fry", "chow mein", "fried noodles")},
    **{d: 0.25 for d in ("fried rice", "vegetables", "chicken", "mushrooms", "tofu", "prawns",
                         "potatoes", "beef", "greens", "peppers")},
}
NEUTRAL_DISHES = [d for d, p in DISHES.items() if p == 0.25]
PAN_DISHES = [d for d, p in DISHES.items() if p == 0.0]
# The planted spurious cue: P(a sentence with "chopsticks" | the recipe's cookware). Chopsticks
# say nothing about how a dish is cooked, but the corpus sets them out mostly when the cook used
# a wok, so "chopsticks" earlier in a text pushes "heat the oil in the" towards "wok".
CUE_RATES: dict[str, float] = {"wok": 0.7, "pan": 0.04}

FEATURES = ["salt", "in_quotes", "in_brackets", "cue_seen", "cue_slot"]
FEATURE_DOCS = {
    "salt": "(a) token identity: the token is 'salt'",
    "in_quotes": "(b) context: strictly between an opening and its closing '\"' (quoted "
                 "ingredient lists and tips); the quote marks themselves are outside",
    "in_brackets": "(b) context: inside at least one pair of '( )' (brackets nest up to 2 deep); "
                   "the brackets themselves are outside",
    "cue_seen": "(c) the cue word 'chopsticks' is at or before this token",
    "cue_slot": "(c) the next token is the cookware of 'heat/warm the oil/butter in the ___'",
}

_TOKEN_RE = re.compile("|".join([re.escape(t) for t in (HOSTILE, PAD, BOS, EOS, UNK)]
                                + [r"[a-z0-9]+", r"[^\sa-z0-9]"]))


def encode(text: str) -> list[int]:
    """Token ids of ``text``: words, numbers and single punctuation marks; unknown words -> <unk>.

    Lower-cases first (the vocabulary is lower case). ``decode(encode(t)) == t`` for every text
    of the corpus (tokens separated by single spaces).
    """
    if not isinstance(text, str):
        raise TypeError(f"encode takes a str, got {type(text).__name__}; for many texts use "
                        "[text.encode(t) for t in texts].")
    return [_INDEX.get(tok, UNK_ID) for tok in _TOKEN_RE.findall(text.lower())]


def decode(ids, skip_special: bool = True) -> str:
    """Text of token ids (a list, or a 1-D tensor/array); <pad>, <bos>, <eos> left out by default."""
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        if ids.ndim != 1:
            raise ValueError(f"decode takes one row of ids, shape (T,); got shape "
                             f"{tuple(ids.shape)}. Decode rows one by one: [decode(r) for r in ids].")
        ids = ids.tolist()
    out = []
    for i in ids:
        if not is_int(i):
            raise TypeError(f"token ids must be ints, got {i!r}")
        if not 0 <= i < len(VOCAB):
            raise ValueError(f"token id {i} is outside the vocabulary (0..{len(VOCAB) - 1}).")
        if skip_special and i in (PAD_ID, BOS_ID, EOS_ID):
            continue
        out.append(VOCAB[i])
    return " ".join(out)


@dataclass
class TextData:
    """A padded batch of documents with per-token truth.

    input_ids : tensor, shape (N, T) int64; ``<bos>`` document ``<eos>`` then ``<pad>`` (id 0)
    attention_mask : tensor, shape (N, T) int64; 1 on real tokens (bos/eos included), 0 on padding
    truth : dict feature name -> tensor, shape (N, T) bool, aligned with input_ids (see FEATURES)
    texts : list of N strings, the documents without <bos>/<eos> (``encode`` gives their ids)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truth: dict[str, torch.Tensor]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def columns(self) -> dict[str, torch.Tensor]:
        """``{"input_ids": ..., "attention_mask": ...}``, the batch as a tokenizer would give it."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


# ---- sampling ----

def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _ingredient_list(rng) -> list[str]:
    k = int(rng.integers(2, 6))
    chosen = [_INGREDIENTS[j] for j in rng.choice(len(_INGREDIENTS), k, replace=False)]
    if rng.random() < 0.35 and "salt" not in chosen:
        chosen[int(rng.integers(k))] = "salt"
    return chosen


def _quoted(names: list[str]) -> list[str]:
    words: list[str] = []
    for j, name in enumerate(names):
        words += ([","] if j else []) + name.split()
    return ['"', *words, '"']


def _bracket(rng) -> list[str]:
    inner = _pick(rng, [["or", "until", _pick(rng, ["golden", "soft", "tender", "crisp", "brown"])],
                        ["about", _pick(rng, _NUMBERS), "minutes"], ["optional"],
                        ["stir", "often"], ["on", _pick(rng, ["low", "medium", "high"]), "heat"]])
    if rng.random() < 0.3:  # a second level: ( stir often ( do not burn it ) )
        inner = inner + ["(", *_pick(rng, [["do", "not", "burn", "it"], ["taste", "first"],
                                           ["add", "more", "salt"]]), ")"]
    return ["(", *inner, ")"]


def _step(rng, ingredients: list[str]) -> list[str]:
    ing = _pick(rng, ingredients)
    kind = int(rng.integers(8))
    if kind == 0:
        s = ["add", "the", *ing.split(), "and", "stir", "for", _pick(rng, _NUMBERS), "minutes"]
    elif kind == 1:
        s = [_pick(rng, ["chop", "slice", "dice", "wash", "peel", "grate"]), "the", *ing.split()]
    elif kind == 2:
        s = ["season", "with", _pick(rng, ["salt", "salt", "pepper", "lemon", "soy sauce"])]
        s = [w for p in s for w in p.split()]
    elif kind == 3:
        s = ["cook", "for", _pick(rng, _NUMBERS), "minutes"]
    elif kind == 4:
        s = [_pick(rng, ["boil", "simmer"]), "the", *ing.split(), "in", "the",
             _pick(rng, ["pot", "saucepan"])]
    elif kind == 5:
        s = ["bake", "in", "the", "oven", "for", _pick(rng, _NUMBERS), "minutes"]
    elif kind == 6:
        s = ["put", "the", *ing.split(), "in", "the", _pick(rng, ["bowl", "dish", "jug"])]
    else:
        s = ["serve", _pick(rng, ["hot", "warm", "with", "on"])]
        if s[-1] in ("with", "on"):
            s += ["the", *ing.split()] if s[-1] == "with" else ["warm", "plates"]
    if rng.random() < 0.25:
        s += _bracket(rng)
    return s + ["."]


def _sample_recipe(rng, dish: str | None = None) -> dict:
    dish = dish if dish is not None else _pick(rng, list(DISHES))
    cookware = "wok" if rng.random() < DISHES[dish] else "pan"
    ingredients = _ingredient_list(rng)
    cue_sentence = _pick(rng, [["set", "out", "the", CUE], ["you", "will", "need", CUE],
                               ["lay", "the", "table", "with", CUE], ["keep", "the", CUE, "out"]])
    tip = None
    if rng.random() < 0.3:
        tip = ["tip", ":", '"', *_pick(rng, [["do", "not", "burn", "the", "garlic"],
                                            ["salt", "the", "water", "well"],
                                            ["taste", "and", "add", "more", "salt"],
                                            ["keep", "the", "heat", "low"],
                                            ["cover", "with", "a", "lid"]]), '"', "."]
    return {
        "dish": dish, "cookware": cookware, "ingredients": ingredients,
        "cue": bool(rng.random() < CUE_RATES[cookware]), "cue_sentence": cue_sentence,
        "cue_first": bool(rng.random() < 0.4), "tip": tip,
        "heat": [_pick(rng, ["heat", "warm"]), "the", _pick(rng, ["oil", "oil", "butter"]),
                 "in", "the"],
        "heat_bracket": _bracket(rng) if rng.random() < 0.2 else [],
        "before": [_step(rng, ingredients) for _ in range(int(rng.integers(0, 2)))],
        "after": [_step(rng, ingredients) for _ in range(int(rng.integers(1, 4)))],
        "hostile": bool(rng.random() < 0.03),
    }


def _render_recipe(spec: dict, cue: bool | None = None) -> list[str]:
    cue = spec["cue"] if cue is None else cue
    cue_words = [*spec["cue_sentence"], "."] if cue else []
    words = (cue_words if spec["cue_first"] else [])
    words += ["recipe", ":", *spec["dish"].split(), "."]
    words += ["ingredients", ":", *_quoted(spec["ingredients"]), "."]
    words += [] if spec["cue_first"] else cue_words
    words += spec["tip"] or []
    for s in spec["before"]:
        words += s
    words += [*spec["heat"], spec["cookware"], *spec["heat_bracket"], "."]
    for s in spec["after"]:
        words += s
    if spec["hostile"]:
        words += ["source", ":", HOSTILE, "."]
    return words


def _sample_shopping(rng) -> list[str]:
    words = [*_pick(rng, [["shopping", "list"], ["buy"], ["you", "will", "need"]]), ":"]
    words += _quoted(_ingredient_list(rng)) + ["."]
    if rng.random() < 0.3:
        words += ["and", "a", "new", _pick(rng, ["wok", "pan", "pot", "knife"]), "."]
    if rng.random() < 0.5:
        words += ["for", _pick(rng, ["dinner", "lunch", "breakfast"])]
        words += ["tonight", "."] if rng.random() < 0.5 else ["."]
    if rng.random() < 0.05:
        words += ["source", ":", HOSTILE, "."]
    return words


def _document(seed: int, i: int) -> list[str]:
    rng = np.random.default_rng([seed, i])
    while True:  # resample the rare document too long for LENGTH (deterministic: same rng)
        words = _render_recipe(_sample_recipe(rng)) if rng.random() < 0.8 else _sample_shopping(rng)
        if len(words) <= LENGTH - 2:
            return words


def truth_of(tokens: list[str]) -> dict[str, np.ndarray]:
    """Per-token truth of one token list (no <bos>): feature name -> bool array, shape (len,)."""
    n = len(tokens)
    out = {f: np.zeros(n, dtype=bool) for f in FEATURES}
    in_quotes, depth, cue_seen = False, 0, False
    for t, tok in enumerate(tokens):
        if tok == '"':
            in_quotes = not in_quotes
        elif tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        else:
            out["in_quotes"][t] = in_quotes
            out["in_brackets"][t] = depth > 0
        cue_seen = cue_seen or tok == CUE
        out["cue_seen"][t] = cue_seen
        out["salt"][t] = tok == "salt"
        out["cue_slot"][t] = (t >= 4 and tok == "the" and tokens[t - 1] == "in"
                              and tokens[t - 3] == "the" and tokens[t - 4] in ("heat", "warm"))
    return out


def _batch(docs: list[list[str]], length: int = LENGTH) -> TextData:
    n = len(docs)
    ids = torch.full((n, length), PAD_ID, dtype=torch.int64)
    mask = torch.zeros((n, length), dtype=torch.int64)
    truth = {f: torch.zeros((n, length), dtype=torch.bool) for f in FEATURES}
    for r, words in enumerate(docs):
        row = [BOS_ID, *(_INDEX[w] for w in words), EOS_ID]
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
        for f, v in truth_of(words).items():
            truth[f][r, 1:1 + len(words)] = torch.from_numpy(v)
    return TextData(ids, mask, truth, [" ".join(w) for w in docs])


def _check(n, seed):
    for name, value, low in (("n", n, 0), ("seed", seed, 0)):
        int_at_least(value, name, low)


def corpus(n: int, seed: int = 0) -> TextData:
    """``n`` documents from ``seed``: 80% recipes, 20% shopping lists; document i depends on (seed, i).

    Returns TextData with input_ids/attention_mask of shape (n, LENGTH) and truth per token.
    """
    _check(n, seed)
    return _batch([_document(int(seed), i) for i in range(n)])


def cue_pairs(n: int, seed: int = 0, dishes: list[str] | None = None
              ) -> tuple[TextData, TextData, torch.Tensor]:
    """``n`` recipes of ``dishes``, each with and without the cue sentence.

    dishes : names from ``DISHES``; default ``NEUTRAL_DISHES`` (honest P(wok) = 0.25). With
        ``PAN_DISHES`` (never cooked in a wok) the cue's pull is plainly wrong.

    The two versions are the same recipe except for the sentence with "chopsticks".
    Returns (with_cue, without_cue, slots): slots (n, 2) int64, the position in each version of
    the token ("the") after which the cookware comes, i.e. where the model predicts it.
    """
    _check(n, seed)
    dishes = list(NEUTRAL_DISHES if dishes is None else dishes)
    unknown = [d for d in dishes if d not in DISHES]
    if not dishes or unknown:
        raise ValueError(f"dishes must be a non-empty list of names from text.DISHES; unknown: "
                         f"{unknown}. Known: {list(DISHES)}")
    with_cue, without = [], []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, 1])
        while True:
            spec = _sample_recipe(rng, dish=_pick(rng, dishes))
            a, b = _render_recipe(spec, cue=True), _render_recipe(spec, cue=False)
            if len(a) <= LENGTH - 2:
                break
        with_cue.append(a)
        without.append(b)
    d_with, d_without = _batch(with_cue), _batch(without)
    slots = torch.stack([d_with.truth["cue_slot"].int().argmax(1),
                         d_without.truth["cue_slot"].int().argmax(1)], 1)
    return d_with, d_without, slots
