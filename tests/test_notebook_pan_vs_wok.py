"""Execute notebook 02 (frying pan vs wok) and check what it computed and displayed.

Apart from the other notebooks because it is the slowest: pytest-xdist (``--dist loadfile``) hands
out whole files, so on its own file it runs beside them on the other worker.
"""

from __future__ import annotations

import pytest

from .test_notebooks import UMAP_BARS, WIDGET_MIME, _run, assert_progress


PAN_VS_WOK_FACTS = """
import json as _json
_rows = {r["patch"]: r for r in table.rows}
import resource as _resource
print("FACTS" + _json.dumps({
    "peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
    "share_wok_side": share_wok_side,
    "share_all": share_all,
    "selected": list(compare_widget.selected),
    "panel_selected": list(panel.selected),
    "wok_side": sorted(wok_side),
    "pairs": compare_widget.pairs,
    "noodles": _rows["kitchen noodles"],
    "cell": _rows["from atlas cell"],
    "icon": _rows["icon of the cell"],
    "noise": _rows["random noise"],
    "patch_shape": list(atlas_patch.shape),
    "class_atlas_cls": wok_atlas.cls,
    "class_atlas_rows": int(wok_atlas.kept.sum()),
    "class_atlas_wok_share": float((cache.labels[cache["block4"].sample_id[wok_atlas.kept]] == 1).float().mean()),
    "class_atlas_noodles": share_wok_atlas,
    "class_atlas_compared": len(wok_atlas.compared),
    "imagenet": [net.classes[567], net.classes[909]],
}))
"""


@pytest.mark.slow
def test_pan_vs_wok(tmp_path, artifacts):
    nb, facts, outputs = _run("02_pan_vs_wok.ipynb", tmp_path, PAN_VS_WOK_FACTS, artifacts)
    # every long step shows its progress in its own cell's output
    assert_progress(nb, {"aw.capture(": ["kitchen images", "capture"], "targets = [": ["attribute"],
                         "aw.compare_atlas(": UMAP_BARS,
                         "aw.patch_attack(": ["kitchen images", "patch attack"],
                         "aw.class_atlas(": ["attribute"] + UMAP_BARS})
    assert sum(WIDGET_MIME in o.get("data", {}) for o in outputs) >= 5  # atlas+panel, 3 image rows, class atlas
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("kitchen noodles" in h and "random noise" in h for h in html)  # the table

    # the comparison atlas points at the planted cue: wok-side cells see noodles >= 3x as often
    assert facts["share_wok_side"] >= 3 * facts["share_all"]
    assert facts["selected"] == facts["wok_side"] == facts["panel_selected"]
    assert ["wok", "frying pan"] in facts["pairs"] and len(facts["pairs"]) == 2
    # the attack: noodles flip >= 30% of pans, noise < a third of that, the atlas patch >= 2x noise
    noodles, cell, noise = facts["noodles"], facts["cell"], facts["noise"]
    assert noodles["n_images"] == cell["n_images"] == noise["n_images"] >= 150
    assert noodles["dynamic_rate"] >= 0.30
    assert noise["dynamic_rate"] < noodles["dynamic_rate"] / 3
    assert cell["dynamic_flips"] >= 2 * noise["dynamic_flips"]
    assert facts["icon"]["dynamic_flips"] >= 2 * noise["dynamic_flips"]
    assert facts["patch_shape"] == [3, 24, 24]
    # the class atlas of wok (top-1 among all 6 classes) holds mostly positions of wok images,
    # and they see noodles far more often than positions overall
    assert facts["class_atlas_cls"] == "wok" and facts["class_atlas_compared"] == 6
    assert facts["class_atlas_rows"] > 300 and facts["class_atlas_wok_share"] > 0.6
    assert facts["class_atlas_noodles"] >= 3 * facts["share_all"]
    assert facts["imagenet"] == ["frying pan", "wok"]
