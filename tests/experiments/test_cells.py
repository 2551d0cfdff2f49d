"""patch_from_icon: a cell's feature visualisation as a patch, on the kitchen model."""

from __future__ import annotations

import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.experiments.cells import patch_from_icon
from atlaswidgets.experiments.patch import NOISE


def test_icon_patch_of_the_noodles_cell_flips_frying_pans(kitchen_net, kitchen_pans, kitchen_comparison,
                                                          noodles_cell, tmp_path):
    cache, _, comp = kitchen_comparison
    cell, _ = noodles_cell
    patch = patch_from_icon(kitchen_net, comp, cache, cell, steps=32, store=tmp_path)
    # the centre half of block4's 46 px receptive field, cut from a 64 px icon
    assert patch.shape == (3, 23, 23) and patch.dtype == torch.float32
    assert 0.0 <= float(patch.min()) and float(patch.max()) <= 1.0
    # same seed, same patch (the second call reads the stored icon)
    again = patch_from_icon(kitchen_net, comp, cache, cell, steps=32, store=tmp_path, size=23)
    torch.testing.assert_close(again, patch)
    table = aw.patch_attack(kitchen_net, kitchen_pans, {"noodles cell icon": patch}, "wok",
                            source="frying pan")
    icon, noise = table.row("noodles cell icon"), table.row(NOISE)
    print(f"noodles cell {cell} icon patch: dynamic {icon['dynamic_rate']:.3f}, static "
          f"{icon['static_rate']:.3f}; noise {noise['dynamic_rate']:.3f}")
    assert icon["dynamic_flips"] >= 2 * noise["dynamic_flips"]


def test_icon_patch_bad_input(kitchen_net, kitchen_comparison):
    cache, _, comp = kitchen_comparison
    with pytest.raises(ValueError, match="crop must be a number"):
        patch_from_icon(kitchen_net, comp, cache, crop=0)
    with pytest.raises(ValueError, match="Cell 12345 is not a visible cell"):
        patch_from_icon(kitchen_net, comp, cache, 12345)
    with pytest.raises(TypeError, match="atlas must be an Atlas"):
        patch_from_icon(kitchen_net, "cell", cache)
    assert aw.patch_from_icon is patch_from_icon
