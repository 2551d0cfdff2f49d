"""The results of ``explain_layer``: one row per unit, searchable, shown as text and escaped HTML."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

__all__ = ["ExplanationTable", "COLUMNS"]

# unit : the channel index, or the direction's index in the list given; kind : "channel" or
# "direction"; score : correlation over top and random samples (None when the unit failed);
# top_only, random_only : over those samples alone; n_samples : examples scored; error : why a
# unit failed (an explainer's or simulator's ExplanationFailed), else None
COLUMNS = ("unit", "kind", "explanation", "score", "top_only", "random_only", "n_samples", "error")


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3f}"
    return str(x)


@dataclass
class ExplanationTable:
    """Explanations and scores of the units of one layer, in the order they were asked for.

    rows : list of dicts with the keys of ``COLUMNS``
    layer : the layer's name; path : the results store directory, or None (kept in memory only)
    """

    layer: str
    rows: list[dict]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExplanationTable) and (self.layer, self.rows) == (other.layer, other.rows)

    def unit(self, unit: int, kind: str = "channel") -> dict:
        """The row of one unit (a channel index, or with kind="direction" a direction's index)."""
        for row in self.rows:
            if row["unit"] == unit and row["kind"] == kind:
                return row
        raise KeyError(f"No {kind} {unit!r} in this table of {len(self.rows)} units of {self.layer!r}.")

    def sorted(self, by: str = "score", descending: bool = True) -> "ExplanationTable":
        """The rows ordered by a numeric column (failed units, with no score, last)."""
        if by not in ("score", "top_only", "random_only", "n_samples", "unit"):
            raise ValueError(f"by must be one of score, top_only, random_only, n_samples, unit; got {by!r}.")
        have = [r for r in self.rows if r[by] is not None]
        have.sort(key=lambda r: r[by], reverse=descending)
        return ExplanationTable(self.layer, have + [r for r in self.rows if r[by] is None], self.path)

    def search(self, text: str) -> "ExplanationTable":
        """The units whose explanation contains ``text`` (case-insensitive), best score first."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"search needs a non-empty string, such as 'noodles'; got {text!r}.")
        needle = text.strip().casefold()
        hits = [r for r in self.rows if r["explanation"] is not None and needle in r["explanation"].casefold()]
        return ExplanationTable(self.layer, hits, self.path).sorted()

    def failed(self) -> "ExplanationTable":
        """The units with no score (their ``error`` says why)."""
        return ExplanationTable(self.layer, [r for r in self.rows if r["score"] is None], self.path)

    def to_pandas(self):
        """A pandas DataFrame with the columns of ``COLUMNS``."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError('to_pandas needs pandas: pip install pandas') from None
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def _head(self) -> str:
        failed = sum(r["score"] is None for r in self.rows)
        where = f", stored at {str(self.path)!r}" if self.path is not None else ""
        return (f"ExplanationTable({len(self.rows)} units of {self.layer!r}"
                f"{f', {failed} failed' if failed else ''}{where})")

    def __repr__(self, limit: int = 10) -> str:
        lines = [self._head()]
        for r in self.rows[:limit]:
            what = r["explanation"] if r["explanation"] is not None else "-"
            if r["error"] is not None:
                what += f" (failed: {r['error']})"
            lines.append(f"  {r['kind']} {r['unit']}: {what}  score {_fmt(r['score'])} "
                         f"(top {_fmt(r['top_only'])}, random {_fmt(r['random_only'])}, n={r['n_samples']})")
        if len(self.rows) > limit:
            lines.append(f"  ... {len(self.rows) - limit} more (.sorted(), .search(text), .to_pandas())")
        return "\n".join(lines)

    def _repr_html_(self, limit: int = 50) -> str:
        # explanations come from explainers (and LLMs): text on the page, never markup
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in COLUMNS) + "</tr>"
                       for r in self.rows[:limit])
        more = (f"<p>... {len(self.rows) - limit} more rows</p>" if len(self.rows) > limit else "")
        return (f"<div><p>{html.escape(self._head())}</p><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{more}</div>")
