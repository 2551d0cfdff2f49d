"""The one progress bar of the long steps: checked argument, drawn or not, finished on close."""

from __future__ import annotations

import pytest

from atlaswidgets.cache.progress import checked_progress, progress_bar, tqdm_options


@pytest.mark.parametrize("bad", ["no", 1, None, 0.0])
def test_progress_must_be_a_bool(bad):
    with pytest.raises(TypeError, match=r"progress must be True or False, got .*\("):
        checked_progress(bad)
    with pytest.raises(TypeError, match="progress must be True or False"):
        progress_bar("step", 3, "img", bad)
    assert checked_progress(True) is True and checked_progress(False) is False


def test_a_bar_counts_its_step_and_false_draws_nothing(capsys):
    with progress_bar("capture", 5, "img") as bar:
        for _ in range(5):
            bar.update(1)
    shown = capsys.readouterr().err  # outside a notebook tqdm.auto writes text to stderr
    assert "capture: 100%" in shown and "5/5" in shown and "img" in shown
    with progress_bar("capture", 5, "img", progress=False) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_options_for_a_library_that_draws_its_own_bar():
    assert tqdm_options("UMAP epochs", "epoch", True) == {
        "desc": "UMAP epochs", "unit": "epoch", "disable": False, "leave": True}
    assert tqdm_options("UMAP epochs", "epoch", False)["disable"] is True
