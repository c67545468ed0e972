"""A real TensorBoard server, on loopback, on a real run's logs: the image tags and an image read back over its
HTTP API, as the browser's Images dashboard reads them."""

import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.conftest import _images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.fixture(scope="module")
def server(lenet_run):
    _, _, run = lenet_run
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(run.parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--samples_per_plugin",
            "images=200",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if json.loads(_get(f"{base}/data/runs")):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"tensorboard did not start: {proc.stdout.read().decode()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tensorboard_serves_the_image_tags_and_images(server, lenet_run):
    _, ea, _ = lenet_run
    runs = json.loads(_get(f"{server}/data/runs"))
    assert runs == ["version_0"]
    # The images plugin may still be loading the event file: wait until it lists every tag the reader sees.
    expected = set(ea.Tags()["images"])
    deadline = time.time() + 60
    while True:
        tags = json.loads(_get(f"{server}/data/plugin/images/tags"))["version_0"]
        if expected <= set(tags) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert expected <= set(tags)
    assert {"filters/conv_1", "decision", "evolution/filters/conv_1", "confusion_matrix"} <= set(tags)
    tag = "filters/conv_1"
    q = urllib.parse.urlencode({"run": "version_0", "tag": tag, "sample": 0})
    entries = json.loads(_get(f"{server}/data/plugin/images/images?{q}"))
    assert [e["step"] for e in entries] == [0, 1]  # every epoch, with --samples_per_plugin images=200
    png = _get(f"{server}/data/plugin/images/individualImage?{entries[1]['query']}")
    served = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(served, _images(ea, tag)[1])  # the very picture the callback logged
    scalars = json.loads(_get(f"{server}/data/plugin/scalars/tags"))["version_0"]
    assert {"val/acc", "selectivity/relu_3/mean_index", "layer_responses/relu_3"} <= set(scalars)
