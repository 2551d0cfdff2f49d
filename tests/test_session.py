"""aw.shutdown_kernel and aw.shutdown_button outside a Jupyter server's kernel (the shutdown itself,
through a server, is exercised by tests/test_notebook_session.py)."""

from __future__ import annotations

import pytest

import atlaswidgets as aw


def test_outside_a_servers_kernel_nothing_is_shut_down_and_the_manual_way_is_said(capsys):
    assert aw.shutdown_kernel() is False
    assert "Kernel > Shut Down Kernel" in capsys.readouterr().out
    button = aw.shutdown_button()
    assert "shut this kernel down" in button.description and not button.disabled
    button.click()
    assert button.disabled and button.description.startswith("Use Kernel > Shut Down Kernel")


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"delay must be a number of seconds in \[0, 60\], got -1"):
        aw.shutdown_kernel(delay=-1)
    with pytest.raises(ValueError, match="description must be a non-empty string"):
        aw.shutdown_button("  ")
