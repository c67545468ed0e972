"""Real TensorBoard with convscope's plugin on a free 127.0.0.1 port, for the tests that talk HTTP to it.

Where the ``tensorboard_plugins`` entry point is installed (``pip install .``, the Makefile's venv), TensorBoard's
own ``main`` finds the plugin; in a venv without it (a checkout used in place) this module's ``__main__`` runs the
same ``tensorboard.program`` with the plugin added to TensorBoard's default plugins.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

from benchmarks.export_images import free_port
from tests.conftest import ROOT


def plugin_installed() -> bool:
    """Whether TensorBoard's own main will find and load this checkout's plugin (an installed, importable entry
    point whose code is this checkout's, not another worktree's that the venv was installed from)."""
    for ep in entry_points(group="tensorboard_plugins"):
        if ep.name == "convscope":
            try:
                plugin = ep.load()
            except ImportError:
                return False
            return plugin.plugin_name == "convscope" and Path(inspect.getfile(plugin)).resolve().is_relative_to(ROOT)
    return False


@contextlib.contextmanager
def tensorboard(logdir, *args: str, wait_s: float = 90.0):
    """Yield the base URL of a TensorBoard serving ``logdir`` (with ``args``); stopped on exit."""
    port = free_port()
    flags = ["--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port), *args]
    if plugin_installed():
        cmd = [sys.executable, "-m", "tensorboard.main", *flags]
    else:
        cmd = [sys.executable, "-m", "tests.tb_server", *flags]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"TensorBoard exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            try:
                listing = json.load(urllib.request.urlopen(base + "/data/plugins_listing", timeout=5))
                if "convscope" in listing:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"TensorBoard did not answer on {base} within {wait_s:.0f} s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


if __name__ == "__main__":
    from tensorboard import default, program

    from callbacks.tb_plugin import ConvscopePlugin

    tb = program.TensorBoard(plugins=[*default.get_static_plugins(), ConvscopePlugin])
    tb.configure(argv=[None, *sys.argv[1:]])
    sys.exit(tb.main())
