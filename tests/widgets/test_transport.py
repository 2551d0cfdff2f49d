"""The one widget transport: arrays as {view, dtype, shape} both ways, array traits on every widget,
and each widget's front end one bundled ES module that matches its sources in js/src/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import traitlets

from atlaswidgets.widgets._common import Array, RefusedType, RefusedValue, array_from_json, array_to_json
from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.compare import ComparisonWidget
from atlaswidgets.widgets.diff import DiffWidget
from atlaswidgets.widgets.examples import ExamplePanel
from atlaswidgets.widgets.neuron import NeuronViewer

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"
ESBUILD = JS / "node_modules" / "esbuild"
# .ci/run sets this: there the bundle check must run, not skip
MUST_CHECK = os.environ.get("ATLASWIDGETS_CHECK_BUNDLE") == "1"


class Holder(traitlets.HasTraits):
    ij = Array("uint32", ndim=2)
    share = Array("float32")
    yx = Array("int32", ndim=2)


def _wire(value):
    """What a message carries: the view's bytes (as the comm copies them), dtype and shape."""
    msg = array_to_json(value)
    return {**msg, "view": bytes(msg["view"])}


@pytest.mark.parametrize("dtype", ["float32", "int32", "uint32", "uint8"])
def test_arrays_round_trip_with_dtype_and_shape(dtype):
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    msg = array_to_json(a)
    assert isinstance(msg["view"], memoryview) and msg["view"].nbytes == a.nbytes
    assert (msg["dtype"], msg["shape"]) == (dtype, [2, 3, 4])
    json.dumps({k: v for k, v in msg.items() if k != "view"})  # the rest is plain JSON
    back = array_from_json(_wire(a))
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)
    # little-endian on the wire whatever the host
    np.testing.assert_array_equal(np.frombuffer(msg["view"], np.dtype(dtype).newbyteorder("<")), a.ravel())
    empty = array_to_json(np.zeros((0, 2), dtype))
    assert empty["view"].nbytes == 0 and empty["shape"] == [0, 2]
    assert array_from_json(_wire(np.zeros((0, 2), dtype))).shape == (0, 2)
    assert array_to_json(None) is None and array_from_json(None) is None


def test_float64_goes_as_float32_and_other_dtypes_are_refused():
    msg = array_to_json(np.linspace(0, 1, 5))
    assert msg["dtype"] == "float32" and msg["view"].nbytes == 5 * 4
    with pytest.raises(TypeError, match="must be one of"):
        array_to_json(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match=r"\{view, dtype, shape\}"):
        array_from_json({"view": b"", "dtype": "float64", "shape": [0]})


def test_array_trait_casts_checks_and_keeps_a_read_only_copy():
    h = Holder()
    assert h.share.shape == (0,) and h.ij.shape == (0, 0) and h.share.dtype == np.float32
    src = np.array([[1, 2], [3, 4]], dtype=np.int64)
    h.ij = src
    assert h.ij.dtype == np.uint32 and h.ij.tolist() == [[1, 2], [3, 4]]
    src[0, 0] = 9  # a copy: the caller's array can change without the page knowing
    assert h.ij[0, 0] == 1 and not h.ij.flags.writeable
    h.share = torch.tensor([0.25, 0.5], dtype=torch.float64)
    assert h.share.dtype == np.float32 and h.share.tolist() == [0.25, 0.5]
    h.yx = np.full((3, 2), -1)
    assert h.yx.dtype == np.int32 and (h.yx == -1).all()
    h.yx = []  # empty takes the trait's ndim
    assert h.yx.shape == (0, 0)
    with pytest.raises(ValueError, match=r"ij holds uint32 values in \[0, 4294967295\], got values in \[-1, 2\]"):
        h.ij = np.array([[-1, 2]])
    with pytest.raises(ValueError, match="yx holds whole numbers"):
        h.yx = np.array([[0.5, 1.0]])
    with pytest.raises(ValueError, match=r"share must be a 1-D array, got shape \(2, 1\)"):
        h.share = np.zeros((2, 1))
    with pytest.raises(TypeError, match="share must be an array of numbers"):
        h.share = ["a", "b"]
    # refusals are TraitErrors too, so a message from the page is rolled back whole
    assert issubclass(RefusedValue, traitlets.TraitError) and issubclass(RefusedType, traitlets.TraitError)
    with pytest.raises(ValueError, match="dtype must be one of"):
        Array("float64")


def test_every_array_of_every_widget_is_an_array_trait():
    # bytes remain only for pictures (PNG and JPEG files); numbers go as typed arrays
    pictures = {"sprite", "icon"}
    for cls in (AtlasWidget, ComparisonWidget, DiffWidget, ExamplePanel, NeuronViewer):
        traits = cls.class_traits(sync=True)
        raw = {name for name, t in traits.items() if isinstance(t, traitlets.Bytes)} - {"_esm", "_css"}
        assert raw <= pictures, (cls.__name__, raw)
        arrays = {name for name, t in traits.items() if isinstance(t, Array)}
        assert arrays, cls.__name__
        for name in arrays:
            assert traits[name].metadata["to_json"] is array_to_json, (cls.__name__, name)


def test_each_widget_module_is_a_file():
    for cls, name in ((AtlasWidget, "atlas"), (ComparisonWidget, "atlas"), (DiffWidget, "atlas"),
                      (ExamplePanel, "examples"), (NeuronViewer, "neuron")):
        path = ROOT / "atlaswidgets" / "widgets" / "static" / f"{name}.js"
        # anywidget reads (and under ANYWIDGET_HMR=1 watches) the file a class names
        assert str(cls._esm) == path.read_text(), cls.__name__
    # no module relies on another file's code being pasted before it: a file that uses a function
    # (or constant) of another file imports it by name
    sources = {p.name: p.read_text() for p in sorted((JS / "src").glob("*.js"))}
    assert set(sources) >= {"atlas.js", "examples.js", "neuron.js", "dom.js", "array.js"}
    defined = {name: re.findall(r"^export (?:async )?(?:function|const) (\w+)", text, re.M)
               for name, text in sources.items()}
    for name, text in sources.items():
        imported = {w for names in re.findall(r"^import \{([^}]*)\} from", text, re.M)
                    for w in re.findall(r"\w+", names)}
        for home, names in defined.items():
            for helper in names if home != name else []:
                used = re.search(rf"(?<![\w.]){helper}\b", text)
                assert not used or helper in imported, f"{name} uses {helper} of {home} without importing it"
    assert not any("concatenat" in text.lower() for text in sources.values())


def _node_or_skip():
    if shutil.which("node") and ESBUILD.is_dir():
        return shutil.which("node")
    why = "node and js/node_modules (run `npm ci` in js/) are needed to check the bundles"
    if MUST_CHECK:
        pytest.fail(why)
    pytest.skip(why)


def test_committed_bundles_match_their_sources():
    node = _node_or_skip()
    done = subprocess.run([node, "build.mjs", "--check"], cwd=JS, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 bundles match" in done.stdout


def test_the_page_reads_what_python_sends():
    # js/src/array.js run by node on the bytes array_to_json gives, for each dtype and a 2-D shape
    node = _node_or_skip()
    cases = []
    for dtype in ("float32", "int32", "uint32", "uint8"):
        a = (np.arange(6) * 3 - (4 if dtype in ("float32", "int32") else 0)).astype(dtype).reshape(3, 2)
        msg = array_to_json(a)
        cases.append({"bytes": list(bytes(msg["view"])), "dtype": msg["dtype"], "shape": msg["shape"],
                      "want": a.ravel().tolist()})
    script = """
import { readArray } from "./src/array.js";
const cases = JSON.parse(process.argv[1]);
const out = cases.map((c) => {
  // a view into a larger buffer at an odd offset, as a message may hold it
  const buf = new Uint8Array(c.bytes.length + 1);
  buf.set(c.bytes, 1);
  const r = readArray({ view: new DataView(buf.buffer, 1, c.bytes.length), dtype: c.dtype, shape: c.shape });
  return { type: r.data.constructor.name, data: Array.from(r.data), shape: r.shape };
});
const empty = readArray(undefined);
let bad = "";
try { readArray({ view: new DataView(new ArrayBuffer(6)), dtype: "float32", shape: [2] }); }
catch (e) { bad = e.message; }
console.log(JSON.stringify({ out, empty: empty.data.length, bad }));
"""
    done = subprocess.run([node, "--input-type=module", "-e", script, json.dumps(cases)], cwd=JS,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    types = {"float32": "Float32Array", "int32": "Int32Array", "uint32": "Uint32Array", "uint8": "Uint8Array"}
    for case, r in zip(cases, got["out"]):
        assert r["type"] == types[case["dtype"]] and r["shape"] == [3, 2]
        assert r["data"] == case["want"]
    assert got["empty"] == 0 and "6 bytes do not hold a float32 array of shape [2]" in got["bad"]
