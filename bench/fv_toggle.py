"""Time "Show feature vis" on the atlases of notebooks 03 and 04, as the page's toggle asks for it.

For each atlas the notebooks' Explorers show (built as the notebooks build them, see
``atlaswidgets.experiments.notebook_icons``), the widget is asked for feature-vis icons the way
the page asks (``widget.icons = "feature-vis"``). Prints how long the kernel was held (the call
returning: the render itself runs in a thread) and how long until the icons were sent, with the
switch back to example icons as the baseline in the same run. With the shipped icons nothing
renders; ``--store DIR`` points the user icon cache elsewhere and ``--no-shipped`` ignores the
shipped icons, so the second number is a full background render.

    python bench/fv_toggle.py [--notebooks 03 04]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", nargs="*", default=["03", "04"])
    parser.add_argument("--no-shipped", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("ATLASWIDGETS_CACHE_DIR", tempfile.mkdtemp(prefix="fv-toggle-"))

    from atlaswidgets.cache import icon_sources
    from atlaswidgets.experiments.notebook_icons import notebook_03, notebook_04
    from atlaswidgets.widgets.atlas import AtlasWidget
    from atlaswidgets.widgets.compare import ComparisonWidget

    if args.no_shipped:
        icon_sources._SOURCES.clear()
    makers = {"03": notebook_03, "04": notebook_04}
    for name in args.notebooks:
        model, cache, atlases = makers[name]()
        for what, atlas in atlases.items():
            cls = ComparisonWidget if what == "comparison" else AtlasWidget
            w = cls(atlas, cache, model=model)
            t0 = time.perf_counter()
            w.icons = "feature-vis"  # what the page's toggle sets
            held = time.perf_counter() - t0
            w.wait_icons()
            shown = time.perf_counter() - t0
            assert w.sprite_icons == "feature-vis"
            t1 = time.perf_counter()
            w.icons = "examples"
            back = time.perf_counter() - t1
            print(f"notebook {name} {what} ({len(atlas.cells.ids)} cells): kernel held "
                  f"{held * 1000:.0f} ms, feature-vis icons shown after {shown:.2f} s "
                  f"(baseline, back to examples: {back:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
