"""Free a notebook's memory when it is done: shut down the kernel it runs in.

On Binder the memory limit (2 GB) holds for the whole session, every open notebook's kernel
together, and a kernel that has run a workshop notebook holds its model, cache and layouts until
it is shut down. ``shutdown_kernel()`` asks the Jupyter server that started the kernel to shut
it down, exactly as JupyterLab's *Kernel > Shut Down Kernel* does; the notebook stays open with its
outputs, and *Kernel > Restart* brings a fresh kernel back. A notebook's last cell shows
``shutdown_button()``: *Run All* must not stop the kernel its widgets still need, a click does.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

__all__ = ["shutdown_button", "shutdown_kernel"]

_MANUAL = ("To free this notebook's memory, shut its kernel down: Kernel > Shut Down Kernel "
           "(JupyterLab), or close the notebook and stop its kernel.")


def _kernel_id() -> str | None:
    """The id of the Jupyter kernel this code runs in, or None outside one."""
    try:
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).stem
    except Exception:  # noqa: BLE001 - not in an ipykernel (a script, a test): there is no kernel
        return None
    return name.removeprefix("kernel-") if name.startswith("kernel-") else None


def _request(url: str, token: str, method: str = "GET"):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as reply:
        body = reply.read()
    return json.loads(body) if body else None


def _owner(kernel_id: str) -> tuple[str, str, str | None] | None:
    """(server URL, token, session id or None) of the running Jupyter server that holds the
    kernel, found through the servers' info files in the runtime directory; None if none does."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    for info in list_running_servers():
        url, token = str(info.get("url", "")).rstrip("/"), str(info.get("token", ""))
        if not url:
            continue
        try:
            kernels = _request(f"{url}/api/kernels", token)
            if not any(k.get("id") == kernel_id for k in kernels):
                continue
            sessions = _request(f"{url}/api/sessions", token)
        except (OSError, ValueError):  # a stale info file, or a server that wants a password
            continue
        session = next((s["id"] for s in sessions if s.get("kernel", {}).get("id") == kernel_id),
                       None)
        return url, token, session
    return None


def _request_shutdown(delay: float) -> bool:
    """Ask the kernel's server to shut it down ``delay`` s from now; False if no server holds it."""
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 60:
        raise ValueError(f"delay must be a number of seconds in [0, 60], got {delay!r}.")
    kernel_id = _kernel_id()
    owner = _owner(kernel_id) if kernel_id else None
    if owner is None:
        return False
    url, token, session = owner
    target = f"{url}/api/sessions/{session}" if session else f"{url}/api/kernels/{kernel_id}"

    def later() -> None:
        time.sleep(delay)
        try:
            _request(target, token, method="DELETE")
        except OSError:  # the server stopped the kernel before it could read the reply
            pass

    threading.Thread(target=later, daemon=True, name="atlaswidgets-shutdown").start()
    return True


def shutdown_kernel(delay: float = 1.0) -> bool:
    """Shut down the Jupyter kernel this runs in, through the server that started it.

    Ends the notebook's session the way JupyterLab's *Shut Down Kernel* does (the server stops the
    kernel and its memory is returned); the request goes ``delay`` seconds after the call returns,
    so the cell's output reaches the page first. Prints what it did. Outside a kernel started by
    a Jupyter server this process can reach (a script, nbclient, a password-protected server)
    it shuts nothing down and prints how to do it by hand.

    Returns True if the shutdown was requested.
    """
    done = _request_shutdown(delay)
    print("Shutting this kernel down to free its memory (its outputs stay on the page). "
          "Kernel > Restart Kernel starts a fresh one." if done else _MANUAL)
    return done


def shutdown_button(description: str = "Done: shut this kernel down (frees its memory)"):
    """A button that shuts the kernel down (``shutdown_kernel``) when clicked: a notebook's last
    cell, which *Run All* can run without stopping the kernel that its widgets still need.

    Returns an ``ipywidgets.Button``; its ``click()`` does the same from Python. After a click
    the button says what happened (its label), since a callback's prints reach no cell.
    """
    import ipywidgets

    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"description must be a non-empty string, got {description!r}.")
    button = ipywidgets.Button(description=description, icon="power-off", tooltip=_MANUAL,
                               layout=ipywidgets.Layout(width="auto"))

    def clicked(_button) -> None:
        button.disabled = True
        if _request_shutdown(1.0):
            button.description = "Kernel shutting down: its memory is freed"
        else:
            button.description = "Use Kernel > Shut Down Kernel to free this notebook's memory"

    button.on_click(clicked)
    return button
