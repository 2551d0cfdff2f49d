"""Aligning two layers' rows: cross-fitted ridge maps both ways, linear CKA, held-out R^2, and
each row's novelty (the share of its activation the other layer cannot explain).

The rows must be aligned (row i of both layers looks at the same place of the same image); see
``atlaswidgets.experiments.diff`` for how model diffing captures them, and for why the folds
split samples, the penalty is light, and novelty has a floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Alignment", "align", "linear_cka", "novelty_of"]


@dataclass
class Alignment:
    """The cross-fitted ridge maps between two layers' rows, both ways.

    pred_b : float32 tensor (n_rows, q), b predicted from a, each row out of sample
    pred_a : float32 tensor (n_rows, p), a predicted from b, each row out of sample
    cka : float, linear CKA of the two layers' rows
    r2_b, r2_a : float, held-out R^2 of b from a and of a from b
    """

    pred_b: torch.Tensor
    pred_a: torch.Tensor
    cka: float
    r2_b: float
    r2_a: float


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two row-aligned matrices (n, p) and (n, q), in [0, 1].

    Computed from the (p, q) cross-covariance, never the (n, n) Gram matrices.
    """
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (x.T @ y).square().sum()
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if float(norm) > 0 else 0.0


def _folds(sample_id: torch.Tensor, n_samples: int, folds: int, seed: int) -> torch.Tensor:
    """Fold of each row: samples are dealt into ``folds`` groups in a seeded random order."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n_samples, generator=g)
    fold_of_sample = torch.empty(n_samples, dtype=torch.int64)
    fold_of_sample[order] = torch.arange(n_samples) % folds
    return fold_of_sample[sample_id.cpu()]


def _ridge_predict(x: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, folds: int,
                   alpha: float) -> torch.Tensor:
    """Out-of-fold ridge predictions of y (n, q) from x (n, p), float64 inside."""
    x, y = x.double(), y.double()
    pred = torch.empty_like(y)
    for k in range(folds):
        test = fold == k
        train = ~test
        if not bool(test.any()):
            continue
        xt, yt = x[train], y[train]
        mx, my = xt.mean(0), yt.mean(0)
        xc = xt - mx
        gram = xc.T @ xc
        # the penalty scales with the mean channel variance, so alpha means the same for any layer
        lam = alpha * float(torch.diagonal(gram).mean()) + 1e-12
        gram.diagonal().add_(lam)
        w = torch.linalg.solve(gram, xc.T @ (yt - my))
        pred[test] = (x[test] - mx) @ w + my
    return pred


def _r2(y: torch.Tensor, pred: torch.Tensor) -> float:
    y = y.double()
    total = (y - y.mean(0)).square().sum()
    return float(1 - (y - pred.double()).square().sum() / total) if float(total) > 0 else 1.0


def align(x: torch.Tensor, y: torch.Tensor, sample_id: torch.Tensor, n_samples: int,
          folds: int = 5, alpha: float = 0.01, seed: int = 0) -> Alignment:
    """Cross-fitted ridge maps x -> y and y -> x, linear CKA and held-out R^2 both ways.

    x : tensor (n_rows, p), model a's rows; y : tensor (n_rows, q), model b's same rows
    sample_id : int tensor (n_rows,), each row's sample (folds split samples, not rows)
    """
    fold = _folds(sample_id, n_samples, folds, seed)
    x, y = x.detach().cpu(), y.detach().cpu()
    pred_b = _ridge_predict(x, y, fold, folds, alpha)
    pred_a = _ridge_predict(y, x, fold, folds, alpha)
    return Alignment(pred_b.float(), pred_a.float(), linear_cka(x, y), _r2(y, pred_b),
                     _r2(x, pred_a))


def novelty_of(y: torch.Tensor, pred: torch.Tensor, floor_share: float = 1.0) -> np.ndarray:
    """Per row, the share of y's centred energy that ``pred`` leaves unexplained, in [0, 1].

    The denominator is the row's energy plus ``floor_share`` x the median row energy (see the
    module doc: it keeps near-empty rows from scoring high on noise).
    """
    y = y.detach().cpu().double()  # pred is on the CPU (Alignment keeps it there)
    pred = pred.detach().cpu()
    energy = (y - y.mean(0)).square().sum(1)
    resid = (y - pred.double()).square().sum(1)
    typical = float(energy.median())
    # more than half the rows empty (a sparse layer): their mean energy sets the floor instead
    floor = floor_share * (typical if typical > 0 else float(energy.mean()))
    out = resid / (energy + floor + 1e-12)
    return out.clamp(0, 1).numpy().astype(np.float32)
