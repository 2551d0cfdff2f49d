"""The flat public API: every exported name resolves to what it says, lazily."""

from __future__ import annotations

import types

import atlaswidgets as aw


def test_every_public_name_resolves_to_its_object_not_a_module():
    import atlaswidgets.render.icons  # noqa: F401  (imports the subpackage named "render")

    for name in aw.__all__:
        value = getattr(aw, name)
        if name in aw._MODULES:
            assert isinstance(value, types.ModuleType), name
        elif name != "__version__":
            # a function or class, even where a submodule has the same name (capture, grid, hooks)
            assert not isinstance(value, types.ModuleType), name
    assert aw.capture.__module__ == "atlaswidgets.cache.capture"
    assert aw.feature_vis.__name__ == "render" and callable(aw.objectives.channel)
    assert callable(aw.transforms.random_affine)


def test_unknown_names_raise_attribute_error():
    try:
        aw.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("expected AttributeError")
