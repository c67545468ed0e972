"""Shared fixtures: small, learnable MNIST-format IDX files written by the tests themselves."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks.figures import MAX_PALETTE_ERROR

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x0000 08 ndim, big-endian dims, raw bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images whose class (0..9) is a bright bar at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        row = 2 + (c % 5) * 5
        col = 3 if c < 5 else 15
        images[i, row : row + 4, col : col + 10] = 255
    return images, labels.astype(np.uint8)


def write_dataset(folder: Path, gz: bool = True, n_train: int = 600, n_test: int = 200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_digits(n_train, seed=0)
    write_idx(folder / "train-images-idx3-ubyte", x, gz)
    write_idx(folder / "train-labels-idx1-ubyte", y, gz)
    x, y = synthetic_digits(n_test, seed=1)
    write_idx(folder / "t10k-images-idx3-ubyte", x, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", y, gz)
    return folder


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """A data_dir holding a small synthetic MNIST (gzipped IDX files): 600 train, 200 test images."""
    return write_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture
def lenet():
    """An untrained LeNet-5 with fixed weights (seed 0), in eval mode."""
    import torch

    from lit_modules.nets import LeNet5

    torch.manual_seed(0)
    return LeNet5().eval()


@pytest.fixture(scope="session")
def fashion_available() -> bool:
    return all(
        (FASHION_DIR / f"{stem}.gz").is_file()
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    )


# ---------------------------------------------------------------- a real 2-epoch fit shared by the callback tests
def _images(ea, tag):
    return {e.step: np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")) for e in ea.Images(tag)}


def changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)``, inclusive, of the pixels where two decoded ``(H, W, 3)`` pictures of the
    same size differ by more than a palette PNG may move a colour (``MAX_PALETTE_ERROR``); None where none do."""
    rows, cols = np.nonzero((np.abs(a.astype(int) - b.astype(int)) > MAX_PALETTE_ERROR).any(-1))
    return None if not len(rows) else (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))


def only_epoch_label_differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two drawings of one tag at consecutive epochs are the same picture but for the epoch number in its
    title: every title ends in ``epoch N``, so one digit (12 px text, at most 16 x 12 px) near the top may differ.
    The encoded bytes cannot be equal: the digit differs, and the palette PNG then picks a slightly different
    palette, which moves other pixels by up to ``MAX_PALETTE_ERROR`` levels."""
    if a.shape != b.shape:
        return False
    box = changed_box(a, b)
    return box is None or (box[1] < 24 and box[1] - box[0] < 16 and box[3] - box[2] < 12)


def _fit(idx_dir, root, config="lenet5", extra=()):
    from train import cli_main

    return cli_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / f"{config}.yaml"),
            "--data.data_dir",
            str(idx_dir),
            "--data.val_size",
            "200",
            "--data.download",
            "false",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "4",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(root),
            "--actmax.steps",
            "16",
            *extra,
        ]
    )


@pytest.fixture(scope="session")
def lenet_run(idx_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    from callbacks import VISUALIZATIONS

    # every callback draws at both epochs here, so each test can compare two drawings
    every = [a for key in VISUALIZATIONS if key != "evolution" for a in (f"--{key}.every_n_epochs", "1")]
    cli = _fit(idx_dir, root, extra=every)
    run = root / "lightning_logs" / "version_0"
    ea = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    ea.Reload()
    return cli, ea, run


# ------------------------------------- drawing one technique without a Trainer (unit-level tests)
def techniques_of(trainer):
    """The techniques the Trainer's owner runs (those ``train.py`` builds from the command line)."""
    return owner_of(trainer).techniques


def owner_of(trainer):
    """The Trainer's ``Convscope`` (made by the deprecated callbacks' setup, or given)."""
    from callbacks.scope import Convscope

    return next(cb for cb in trainer.callbacks if isinstance(cb, Convscope))


class RecordingWriter:
    """Keeps what a render logs, to check it without an event file (the Trainer tests read real ones)."""

    def __init__(self):
        self.images, self.scalars, self.histograms = {}, {}, {}

    def _get_file_writer(self):  # ``scope.add_png`` logs encoded PNGs, as a SummaryWriter's file writer takes them
        return self

    def add_summary(self, summary, step):
        for value in summary.value:  # what a reader sees: the PNG decoded, (3, H, W) uint8
            rgb = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)).convert("RGB"))
            self.images[value.tag] = (torch.from_numpy(rgb.copy()).permute(2, 0, 1), step)

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)

    def add_histogram(self, tag, values, step):
        self.histograms[tag] = (values, step)


def scope_over(x, y, classes=tuple("0123456789"), pixel_range=(0.0, 1.0), writer=None):
    """A ``Scope`` (what techniques share) over the validation split ``(x, y)``, without a Trainer."""
    from callbacks.data import DataFacts
    from callbacks.scope import Scope

    return Scope(DataFacts(tuple(classes), tuple(x.shape[1:]), tuple(pixel_range), (x, y)), writer)


def render_once(cb, net, x, y, classes=tuple("0123456789"), pixel_range=(0.0, 1.0), step=3, callbacks=None):
    """Draw technique ``cb`` once as its owner does (eval mode, no grad, ``Scope.draw``) over a validation split
    ``(x, y)``, without a Trainer; returns the ``RecordingWriter`` with what was logged. ``callbacks``: the techniques
    that share the owner (their declared layers go into the same shared pass)."""
    writer = RecordingWriter()
    scope = scope_over(x, y, classes, pixel_range, writer)
    scope.techniques = list(callbacks) if callbacks else [cb]
    cb.strict = True
    scope.draw(cb, net, step)
    return writer


def near(colour, expected) -> bool:
    """Whether a logged pixel's colour is ``expected`` within what the palette PNG may move a colour."""
    return max(abs(a - b) for a, b in zip(colour, expected)) <= MAX_PALETTE_ERROR


def has_colour(img, rgb) -> bool:
    """Whether a logged uint8 ``(3, H, W)`` image has a pixel of the colour ``rgb``, within what the palette PNG
    may move a colour (``figures.MAX_PALETTE_ERROR`` levels per channel)."""
    return bool((img.permute(1, 2, 0).int() - torch.tensor(rgb)).abs().max(-1).values.le(MAX_PALETTE_ERROR).any())
