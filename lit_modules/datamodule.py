"""MNIST-family data held in memory as tensors and served by slicing.

The standard IDX files (gzipped or not) are read once, normalized once, and kept as one ``(N, 1, 28, 28)``
float tensor per split; on a GPU the tensors live on the device. Batches are slices of a shuffled index, so a
training step costs no per-sample Python, PIL or worker processes.

Where the files are looked for, in order, for ``dataset="fashion_mnist"`` and ``data_dir="data"``:
``data/``, ``data/fashion_mnist/``, ``data/FashionMNIST/raw/`` (torchvision's layout), then Debian's
``/usr/share/datasets/fashion-mnist``. With ``download=True`` and files missing, torchvision's own download
code fetches them into ``data/FashionMNIST/raw/``.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

__all__ = ["MNISTDataModule", "TensorBatches", "read_idx", "DatasetSpec", "DATASETS", "IDXError", "DataNotFoundError"]

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """What differs between the MNIST-family datasets."""

    torchvision_name: str  # class in torchvision.datasets; also the folder name of its raw files
    classes: tuple[str, ...]
    mean: float  # of the training pixels in [0, 1]
    std: float
    system_dirs: tuple[Path, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("MNIST", tuple(str(i) for i in range(10)), 0.1307, 0.3081),
    "fashion_mnist": DatasetSpec(
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        0.2860,
        0.3530,
        (DEBIAN_FASHION_DIR,),
    ),
    "kmnist": DatasetSpec("KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), 0.1918, 0.3483),
}


class IDXError(ValueError):
    """An IDX file is truncated, corrupt or not the expected kind."""


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are not where they were looked for and could not be downloaded."""


_IDX_DTYPES = {0x08: torch.uint8}


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> Tensor:
    """Read an IDX file (``.gz`` or raw) into a uint8 tensor, checking header, size and compression.

    Raises:
        IDXError: naming the file, when it is truncated, has trailing bytes, is corrupt gzip or has the
            wrong magic number or number of dimensions.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # BadGzipFile is an OSError; EOFError = cut gzip stream
        raise IDXError(f"{path}: cannot read IDX file, the gzip stream is corrupt or truncated ({e})") from e
    if len(data) < 4:
        raise IDXError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise IDXError(f"{path}: not an unsigned-byte IDX file (magic bytes {data[:4].hex()})")
    if expected_ndim is not None and ndim != expected_ndim:
        raise IDXError(f"{path}: expected an IDX file with {expected_ndim} dimensions, found {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(shape)
    got = len(data) - header
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise IDXError(f"{path}: IDX file {kind}: header says shape {tuple(shape)} = {expected} bytes, found {got}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


class TensorBatches:
    """An iterable of ``(x, y)`` batches sliced from in-memory tensors; a drop-in for a ``DataLoader``.

    Each pass draws a new permutation from ``seed + pass number`` (so runs are reproducible and resumable); with
    ``world_size > 1`` every rank takes an equal, disjoint share of that permutation. ``start_batch`` (called when a
    pass begins) says how many batches of it were already trained: a fit resumed from a mid-epoch checkpoint goes on
    with exactly the batches it had not seen (Lightning restores that count; see ``state_dict``).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: Callable[[], int] | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.start_batch = start_batch
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # Equal shares for every rank (DDP needs the same number of steps on each); training drops the remainder,
        # evaluation pads by repeating the first samples so that nothing is left out.
        n = len(x)
        self.per_rank = n // world_size if shuffle else math.ceil(n / world_size)

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor | None:
        n = len(self.x)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
            self.epoch += 1
        elif self.world_size == 1:
            return None  # contiguous slices, no gather
        else:
            order = torch.arange(n)
            pad = self.per_rank * self.world_size - n
            if pad:
                order = torch.cat([order, order[:pad]])
        return order[self.rank :: self.world_size][: self.per_rank].to(self.x.device)

    def state_dict(self) -> dict[str, int]:
        """Lightning saves this with the fit loop; the position within a pass comes from Lightning's own batch
        progress (``start_batch``), which, unlike a count of yielded batches, is not skewed by prefetching."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass  # the pass number is set from the restored epoch by the datamodule (set_epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # A generator: nothing (not even the pass number) is consumed until the first batch is asked for, so an
        # iter() without next() (Lightning checks loaders that way) does not shift the shuffling of later passes.
        idx = self._indices()
        skip = self.start_batch() if self.start_batch is not None else 0
        for start in range(skip * self.batch_size, self.per_rank, self.batch_size):
            if idx is None:
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                i = idx[start : start + self.batch_size]
                yield self.x[i], self.y[i]


class MNISTDataModule(pl.LightningDataModule):
    """MNIST, Fashion-MNIST or KMNIST from IDX files, held in memory (on the GPU when training runs there).

    Args:
        dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"kmnist"``.
        data_dir: folder with the IDX files (``train-images-idx3-ubyte[.gz]`` etc.), or torchvision's
            ``<data_dir>/<Name>/raw`` layout; downloads go there.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict (bigger is faster; no effect on results).
        val_size: number of training images held out for validation (a split seeded by ``seed``).
        download: fetch the files with torchvision's download code when they are not found.
        normalize: standardize pixels with the dataset's training mean and std.
        seed: seeds the validation split and the shuffling order.
        on_device: keep the tensors on the accelerator the Trainer uses (no host-to-device copy per step).
    """

    def __init__(
        self,
        dataset: Literal["mnist", "fashion_mnist", "kmnist"] = "mnist",
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        download: bool = True,
        normalize: bool = True,
        seed: int = 42,
        on_device: bool = True,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(sorted(DATASETS))}")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(val_size, int) or val_size < 1:
            raise ValueError(f"val_size must be an integer >= 1, got {val_size!r}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.spec = DATASETS[dataset]
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.download = download
        self.normalize = normalize
        self.seed = seed
        self.on_device = on_device
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}

    # ----------------------------------------------------------------------------------------------- metadata
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label (for plot labels)."""
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The range of the model's input pixels (black and white after normalization)."""
        if not self.normalize:
            return (0.0, 1.0)
        return ((0.0 - self.spec.mean) / self.spec.std, (1.0 - self.spec.mean) / self.spec.std)

    def search_dirs(self) -> list[Path]:
        d, name = self.data_dir, self.spec.torchvision_name
        return [d, d / self.dataset, d / name / "raw", *self.spec.system_dirs]

    # ------------------------------------------------------------------------------------------------ finding
    def find_files(self, split: str) -> tuple[Path, Path] | None:
        """The (images, labels) files of ``split`` in the first search folder that has both, else None."""
        stems = SPLIT_FILES[split]
        for folder in self.search_dirs():
            found = []
            for stem in stems:
                for candidate in (folder / stem, folder / f"{stem}.gz"):
                    if candidate.is_file():
                        found.append(candidate)
                        break
            if len(found) == 2:
                return found[0], found[1]
        return None

    def _missing_message(self, extra: str = "") -> str:
        where = "\n  ".join(str(p) for p in self.search_dirs())
        remedies = [
            f"put {SPLIT_FILES['train'][0]}[.gz] and the other three IDX files in --data.data_dir",
        ]
        if self.download:
            remedies.append("connect to the network so torchvision can download them")
        else:
            remedies.append("set --data.download true to download them with torchvision")
        if self.dataset == "fashion_mnist":
            remedies.append("install Debian's package: apt-get install dataset-fashion-mnist")
        else:
            remedies.append("or train offline on Fashion-MNIST: --data.dataset fashion_mnist (Debian's dataset-fashion-mnist)")
        return (
            f"{self.dataset} data not found; looked in:\n  {where}\n{extra}Remedies:\n  - " + "\n  - ".join(remedies)
        )

    def prepare_data(self) -> None:
        """Download the files when they are missing and ``download`` is on (called on one process only)."""
        if all(self.find_files(s) for s in SPLIT_FILES):
            return
        if not self.download:
            raise DataNotFoundError(self._missing_message())
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.spec.torchvision_name)
        try:
            for train in (True, False):
                cls(str(self.data_dir), train=train, download=True)
        except Exception as e:  # URLError, socket timeouts, HTTP errors, bad checksums: all end the same way
            raise DataNotFoundError(self._missing_message(f"Download failed: {type(e).__name__}: {e}\n")) from e
        if not all(self.find_files(s) for s in SPLIT_FILES):
            raise DataNotFoundError(self._missing_message("Download finished but the files are still missing.\n"))

    # ------------------------------------------------------------------------------------------------ loading
    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """``(images (N, 1, 28, 28) float32, labels (N,) int64)`` of the official ``"train"`` or ``"test"`` set."""
        files = self.find_files(split)
        if files is None:
            raise DataNotFoundError(self._missing_message())
        images = read_idx(files[0], expected_ndim=3)
        labels = read_idx(files[1], expected_ndim=1)
        if images.shape[1:] != (28, 28):
            raise IDXError(f"{files[0]}: expected 28x28 images, found {tuple(images.shape[1:])}")
        if len(images) != len(labels):
            raise IDXError(f"{files[0]} has {len(images)} images but {files[1]} has {len(labels)} labels")
        if len(labels) and int(labels.max()) >= self.num_classes:
            raise IDXError(f"{files[1]}: label {int(labels.max())} out of range 0..{self.num_classes - 1}")
        x = images.unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28) in [0, 1]
        if self.normalize:
            x = x.sub_(self.spec.mean).div_(self.spec.std)
        return x, labels.long()

    def _device(self) -> torch.device:
        trainer = self.trainer
        if self.on_device and trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        device = self._device()
        if stage in (None, "fit", "validate") and "train" not in self._splits:
            x, y = self.load_split("train")
            if self.val_size >= len(x):
                raise ValueError(f"val_size={self.val_size} must be smaller than the training set ({len(x)} images)")
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
            val_idx, train_idx = order[: self.val_size].sort().values, order[self.val_size :]
            self._splits["train"] = (x[train_idx].to(device), y[train_idx].to(device))
            self._splits["val"] = (x[val_idx].to(device), y[val_idx].to(device))
        if stage in (None, "test", "predict") and "test" not in self._splits:
            x, y = self.load_split("test")
            self._splits["test"] = (x.to(device), y.to(device))

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """The in-memory ``(x, y)`` of ``"train"``, ``"val"`` or ``"test"`` (after ``setup``)."""
        if name not in self._splits:
            raise RuntimeError(f"split {name!r} is not loaded; call setup() first (loaded: {sorted(self._splits)})")
        return self._splits[name]

    def _batches(self, name: str, train: bool = False) -> TensorBatches:
        x, y = self.split(name)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        bs = self.batch_size if train else self.eval_batch_size
        def trained_batches() -> int:  # of this epoch, already trained (non-zero only right after a mid-epoch resume)
            progress = trainer.fit_loop.epoch_loop.batch_progress.current
            return int(progress.ready) if trainer.fit_loop.epoch_loop.restarting else 0

        start = trained_batches if train and trainer is not None else None
        return TensorBatches(x, y, bs, shuffle=train, seed=self.seed, rank=rank, world_size=world, start_batch=start)

    def train_dataloader(self) -> TensorBatches:
        loader = self._batches("train", train=True)
        if self.trainer is not None:
            loader.set_epoch(self.trainer.current_epoch)
        return loader

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test")

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("test")
