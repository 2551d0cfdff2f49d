"""Layer selection by name, list or predicate, and hooks that never outlive their block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atlaswidgets.cache.capture import capture, hooks, resolve_layers

from .conftest import TinyCNN, layer_output


def _no_hooks_left(model: nn.Module) -> bool:
    return all(len(m._forward_hooks) == 0 for m in model.modules())


def test_resolve_by_name_list_and_predicate(model):
    assert resolve_layers(model, "conv2") == ["conv2"]
    assert resolve_layers(model, ["conv2", "conv1", "conv2"]) == ["conv2", "conv1"]  # repeats dropped
    convs = resolve_layers(model, lambda name, m: isinstance(m, nn.Conv2d))
    assert convs == ["conv1", "conv2"]  # module order
    assert resolve_layers(model, "") == [""]  # the model itself is a named module too


def test_unknown_layer_lists_close_matches_and_how_to_list_all(model):
    with pytest.raises(ValueError, match=r"Unknown layer 'conv3'\. Close matches: \[") as e:
        resolve_layers(model, "conv3")
    assert "'conv1'" in str(e.value) and "'conv2'" in str(e.value)
    assert "[n for n, _ in model.named_modules()]" in str(e.value)
    wrapped = nn.Sequential(model)
    with pytest.raises(ValueError, match=r"Close matches: .*'0\.conv2'"):
        resolve_layers(wrapped, "conv2")  # a suffix of the full name is suggested too
    with pytest.raises(ValueError, match="Unknown layer 'zzz'\\. List every layer name"):
        resolve_layers(model, ["conv1", "zzz"])


def test_bad_selections(model):
    with pytest.raises(ValueError, match="No layers given"):
        resolve_layers(model, [])
    with pytest.raises(ValueError, match="predicate selected no layer"):
        resolve_layers(model, lambda name, m: False)
    with pytest.raises(TypeError, match="layer name, a list of names or a predicate"):
        resolve_layers(model, 3)
    with pytest.raises(TypeError, match="must be names"):
        resolve_layers(model, ["conv1", 2])
    with pytest.raises(TypeError, match="pass its name 'conv2'"):
        resolve_layers(model, model.conv2)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        resolve_layers("not a model", "conv1")


def test_hooks_record_outputs_and_are_removed(model, data):
    images = data[0][:3]
    with hooks(model, ["conv1", "fc"], fn=lambda name, out: out.detach().clone()) as outs:
        assert len(model.conv1._forward_hooks) == 1
        with torch.no_grad():
            logits = model(images)
    assert torch.equal(outs["conv1"], layer_output(model, "conv1", images))
    assert torch.equal(outs["fc"], logits)
    assert _no_hooks_left(model)


def test_hooks_are_removed_after_an_error_inside_the_block():
    model = TinyCNN()
    with pytest.raises(RuntimeError, match="boom"):
        with hooks(model, lambda n, m: isinstance(m, nn.Conv2d)):
            assert len(model.conv1._forward_hooks) == 1
            raise RuntimeError("boom")
    assert _no_hooks_left(model)


def test_capture_leaves_no_hooks_even_when_it_fails(data):
    model = TinyCNN()

    def broken():
        yield data[0][:8]
        raise RuntimeError("data source died")

    with pytest.raises(RuntimeError, match="data source died"):
        capture(model, broken(), ["conv1", "conv2"], progress=False)
    assert _no_hooks_left(model)
    with pytest.raises(ValueError, match="needs a \\(N, C, H, W\\) or \\(N, T, D\\) output"):
        capture(model, data[0], "fc", progress=False)  # error raised inside a hook
    assert _no_hooks_left(model)


def test_a_reused_module_is_refused(data):
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.relu = nn.ReLU()  # called twice per forward, as in torchvision's BasicBlock

        def forward(self, x):
            return self.relu(self.conv(self.relu(x))).mean(dim=(2, 3))

    with pytest.raises(ValueError, match="'relu' runs more than once in one forward pass"):
        capture(Reuse(), data[0], "relu", progress=False)


def test_a_layer_that_does_not_run_is_refused(data):
    class Unused(TinyCNN):
        def __init__(self):
            super().__init__()
            self.spare = nn.Conv2d(3, 3, 1)

    with pytest.raises(ValueError, match="'spare' did not run"):
        capture(Unused(), data[0], "spare", progress=False)


def test_eval_mode_restores_each_submodules_own_mode_even_on_error():
    from atlaswidgets.cache.hooks import eval_mode

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(), torch.nn.Linear(2, 2))
    net.train()
    net[1].eval()  # a mixed model: model.train(True) afterwards would wrongly wake the dropout
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(net):
            assert not any(m.training for m in net.modules())
            raise RuntimeError("inside")
    assert [m.training for m in net.modules()] == [True, True, False, True]
