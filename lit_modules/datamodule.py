"""Image classification data held in memory as tensors and served by slicing: the MNIST family, CIFAR-10 and
``fashion_mnist_rgb``, a 32 px colour stand-in for CIFAR-10 that works offline.

The files are read once, normalized once, and kept as one ``(N, C, H, W)`` float tensor per split; on a GPU the
tensors live on the device. Batches are slices of a shuffled index, so a training step costs no per-sample Python,
PIL or worker processes.

Where the files are looked for, in order, for ``dataset="fashion_mnist"`` and ``data_dir="data"``:
``data/``, ``data/fashion_mnist/``, ``data/FashionMNIST/raw/`` (torchvision's layout), then Debian's
``/usr/share/datasets/fashion-mnist``. With ``download=True`` and files missing, torchvision's own download
code fetches them into ``data/FashionMNIST/raw/``. CIFAR-10 is read by torchvision's own ``CIFAR10`` class from
``data/cifar-10-batches-py/`` (or ``data/cifar10/cifar-10-batches-py/``), downloaded into ``data/`` when missing.
``fashion_mnist_rgb`` is Fashion-MNIST's files resized to 32x32 and coloured by class (``tint_per_class``).
"""

from __future__ import annotations

import colorsys
import gzip
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchvision.datasets
from torch import Tensor

__all__ = [
    "MNISTDataModule",
    "TensorBatches",
    "read_idx",
    "DatasetSpec",
    "DATASETS",
    "IDXError",
    "DataNotFoundError",
    "CLASS_TINTS",
    "tint_per_class",
    "resize",
    "hue_classes",
]

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """What differs between the datasets."""

    torchvision_name: str  # class in torchvision.datasets; also the folder name of its raw files
    classes: tuple[str, ...]
    mean: float | tuple[float, ...]  # of the training pixels in [0, 1]; one per channel for RGB
    std: float | tuple[float, ...]
    system_dirs: tuple[Path, ...] = ()
    shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of the images the model gets
    files: Literal["idx", "torchvision"] = "idx"  # the four IDX files, or torchvision's class reads its own files
    tinted: bool = False  # grey images resized to 32x32 and coloured by class (``tint_per_class``)
    by_hue: bool = False  # coloured by sample (hue = index mod 10), label = 10 * hue + garment: 100 classes


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
HUE_NAMES = ("red", "orange", "yellow", "green", "teal", "cyan", "azure", "violet", "magenta", "pink")  # CLASS_TINTS

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("MNIST", tuple(str(i) for i in range(10)), 0.1307, 0.3081),
    "fashion_mnist": DatasetSpec("FashionMNIST", FASHION_CLASSES, 0.2860, 0.3530, (DEBIAN_FASHION_DIR,)),
    "kmnist": DatasetSpec("KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), 0.1918, 0.3483),
    # torchvision's class names (its dataset's `classes` replace these once the files are read) and the training
    # set's per-channel statistics.
    "cifar10": DatasetSpec(
        "CIFAR10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        shape=(3, 32, 32),
        files="torchvision",
    ),
    # The offline stand-in for CIFAR-10: real Fashion-MNIST, 32x32 RGB. The colour says the class, so accuracy
    # is not comparable to Fashion-MNIST's; it exists so the colour pictures and 32 px nets can be tried here.
    "fashion_mnist_rgb": DatasetSpec(
        "FashionMNIST",
        FASHION_CLASSES,
        (0.1917, 0.1851, 0.1782),
        (0.2658, 0.2607, 0.2468),
        (DEBIAN_FASHION_DIR,),
        shape=(3, 32, 32),
        tinted=True,
    ),
    # 100 classes offline: the same images, each coloured by one of ten hues in turn; the class is hue and garment
    # ("azure Coat"). For trying convscope at 100 classes (the per-class pictures show ten of them).
    "fashion_mnist_100": DatasetSpec(
        "FashionMNIST",
        tuple(f"{hue} {name}" for hue in HUE_NAMES for name in FASHION_CLASSES),
        (0.1917, 0.1851, 0.1782),
        (0.2658, 0.2607, 0.2468),
        (DEBIAN_FASHION_DIR,),
        shape=(3, 32, 32),
        by_hue=True,
    ),
}

# One colour per class for ``fashion_mnist_rgb``: ten hues evenly spaced, saturation 0.7 so that every channel
# keeps at least 30% of the picture.
CLASS_TINTS: tuple[tuple[float, float, float], ...] = tuple(colorsys.hsv_to_rgb(c / 10, 0.7, 1.0) for c in range(10))


def resize(x: Tensor, size: int = 32) -> Tensor:
    """Images ``(N, C, H, W)`` resized to ``size`` x ``size`` (bilinear)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def tint_per_class(x: Tensor, labels: Tensor, tints: tuple[tuple[float, float, float], ...] = CLASS_TINTS) -> Tensor:
    """Grey images ``(N, 1, H, W)`` in [0, 1] as RGB ``(N, 3, H, W)``: each pixel times its class's colour, so
    black stays black and the garment takes the colour of its class."""
    colours = torch.tensor(tints, dtype=x.dtype, device=x.device)[labels.to(x.device)]  # (N, 3)
    return x * colours[:, :, None, None]


def hue_classes(x: Tensor, labels: Tensor, hues: int = 10, size: int = 32) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """Grey images ``(N, 1, H, W)`` in [0, 1] of ``K`` classes as ``hues * K`` classes: image ``i`` resized to
    ``size`` and coloured by hue ``i % hues`` (evenly spaced, as ``CLASS_TINTS``), label ``hue * K + label``;
    returns ``(x (N, 3, size, size), labels, class names)``. Real images at any class count and size, offline."""
    k = len(FASHION_CLASSES)
    hue = torch.arange(len(labels)) % hues
    tints = tuple(colorsys.hsv_to_rgb(h / hues, 0.7, 1.0) for h in range(hues))
    names = HUE_NAMES if hues == len(HUE_NAMES) else tuple(f"hue{h}" for h in range(hues))
    classes = tuple(f"{names[h]} {name}" if hues > 1 else name for h in range(hues) for name in FASHION_CLASSES)
    return tint_per_class(resize(x, size), hue, tints), hue * k + labels.long(), classes


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
    """MNIST, Fashion-MNIST, KMNIST, CIFAR-10 or ``fashion_mnist_rgb``, held in memory (on the GPU when training
    runs there).

    Args:
        dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"kmnist"`` (1x28x28); ``"cifar10"`` or
            ``"fashion_mnist_rgb"`` (3x32x32; Fashion-MNIST resized and coloured by class, for offline use);
            ``"fashion_mnist_100"`` (3x32x32, 100 classes offline: each image coloured by one of ten hues, the class
            is hue and garment; set the net's ``num_classes`` to 100).
        data_dir: folder with the IDX files (``train-images-idx3-ubyte[.gz]`` etc.), or torchvision's
            ``<data_dir>/<Name>/raw`` layout, or for CIFAR-10 torchvision's ``<data_dir>/cifar-10-batches-py``;
            downloads go there.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict (bigger is faster; no effect on results).
        val_size: number of training images held out for validation (a split seeded by ``seed``).
        download: fetch the files with torchvision's download code when they are not found.
        normalize: standardize pixels with the dataset's training mean and std (per channel for RGB).
        seed: seeds the validation split and the shuffling order.
        on_device: keep the tensors on the accelerator the Trainer uses (no host-to-device copy per step).
    """

    def __init__(
        self,
        dataset: Literal[
            "mnist", "fashion_mnist", "kmnist", "cifar10", "fashion_mnist_rgb", "fashion_mnist_100"
        ] = "mnist",
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
            grey = sorted(k for k, v in DATASETS.items() if v.shape[0] == 1)
            rgb = sorted(k for k, v in DATASETS.items() if v.shape[0] == 3)
            raise ValueError(
                f"unknown dataset {dataset!r}; valid: {', '.join(grey)} (1x28x28), {', '.join(rgb)} (3x32x32)"
            )
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
        self._read_classes: tuple[str, ...] | None = None  # torchvision's dataset.classes, once the files are read

    def __getstate__(self) -> dict:
        # A copy (a drawing process's: ``callbacks.drawing``) reads the files again in ``setup``: pickling the
        # loaded splits would copy every image, and the trainer is not the copy's.
        return {**self.__dict__, "_splits": {}, "trainer": None}

    # ----------------------------------------------------------------------------------------------- metadata
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label (for plot labels): torchvision's ``dataset.classes`` where it reads the
        files, else the spec's."""
        return self._read_classes or self.spec.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images the model gets."""
        return self.spec.shape

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean subtracted from the pixels in [0, 1] (zeros when ``normalize`` is off)."""
        m = self.spec.mean if isinstance(self.spec.mean, tuple) else (self.spec.mean,) * self.spec.shape[0]
        return m if self.normalize else (0.0,) * len(m)

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel divisor of the pixels in [0, 1] (ones when ``normalize`` is off)."""
        s = self.spec.std if isinstance(self.spec.std, tuple) else (self.spec.std,) * self.spec.shape[0]
        return s if self.normalize else (1.0,) * len(s)

    @property
    def channel_ranges(self) -> tuple[tuple[float, float], ...]:
        """Per channel, the model-input values of black and white (they differ by channel for RGB data)."""
        return tuple(((0.0 - m) / s, (1.0 - m) / s) for m, s in zip(self.mean, self.std))

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The range of the model's input pixels: black and white after normalization, over all channels (the
        lowest black and the highest white, where per-channel normalization makes them differ)."""
        ranges = self.channel_ranges
        return (min(lo for lo, _ in ranges), max(hi for _, hi in ranges))

    def search_dirs(self) -> list[Path]:
        d, name = self.data_dir, self.spec.torchvision_name
        if self.spec.files == "torchvision":  # folders that hold torchvision's own folder (cifar-10-batches-py)
            return [d, d / self.dataset]
        return [d, d / self.dataset, d / name / "raw", *self.spec.system_dirs]

    # ------------------------------------------------------------------------------------------------ finding
    def torchvision_root(self) -> Path | None:
        """The first search folder whose torchvision folder (e.g. ``cifar-10-batches-py``) has every file the
        torchvision class reads, else None (checked by name; the class checks the files' MD5 when it reads them)."""
        cls = getattr(torchvision.datasets, self.spec.torchvision_name)
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        for folder in self.search_dirs():
            if all((folder / cls.base_folder / name).is_file() for name in names):
                return folder
        return None

    def _has_files(self) -> bool:
        if self.spec.files == "torchvision":
            return self.torchvision_root() is not None
        return all(self.find_files(s) for s in SPLIT_FILES)

    def find_files(self, split: str) -> tuple[Path, Path] | None:
        """The (images, labels) IDX files of ``split`` in the first search folder that has both, else None."""
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
        if self.spec.files == "torchvision":
            base = getattr(torchvision.datasets, self.spec.torchvision_name).base_folder
            where = "\n  ".join(str(p / base) for p in self.search_dirs())
            remedies = [
                "connect to the network so torchvision can download it (about 170 MB) into --data.data_dir"
                if self.download
                else "set --data.download true to download it with torchvision",
                f"or copy an extracted {base}/ folder (torchvision's download, or the python version from "
                "https://www.cs.toronto.edu/~kriz/cifar.html) into --data.data_dir",
                "or train offline on a 32 px colour stand-in: --data.dataset fashion_mnist_rgb (Fashion-MNIST "
                "resized and coloured by class; Debian's dataset-fashion-mnist)",
            ]
            return (
                f"{self.dataset} data not found; torchvision's {self.spec.torchvision_name} looked for {base}/ in:"
                f"\n  {where}\n{extra}Remedies:\n  - " + "\n  - ".join(remedies)
            )
        where = "\n  ".join(str(p) for p in self.search_dirs())
        remedies = [
            f"put {SPLIT_FILES['train'][0]}[.gz] and the other three IDX files in --data.data_dir",
        ]
        if self.download:
            remedies.append("connect to the network so torchvision can download them")
        else:
            remedies.append("set --data.download true to download them with torchvision")
        if self.spec.torchvision_name == "FashionMNIST":
            remedies.append("install Debian's package: apt-get install dataset-fashion-mnist")
        else:
            remedies.append(
                "or train offline on Fashion-MNIST: --data.dataset fashion_mnist (Debian's dataset-fashion-mnist)"
            )
        return f"{self.dataset} data not found; looked in:\n  {where}\n{extra}Remedies:\n  - " + "\n  - ".join(remedies)

    def prepare_data(self) -> None:
        """Download the files when they are missing and ``download`` is on (called on one process only)."""
        if self._has_files():
            return
        if not self.download:
            raise DataNotFoundError(self._missing_message())
        cls = getattr(torchvision.datasets, self.spec.torchvision_name)
        try:
            for train in (True, False):
                cls(str(self.data_dir), train=train, download=True)
        except Exception as e:  # URLError, socket timeouts, HTTP errors, bad checksums: all end the same way
            raise DataNotFoundError(self._missing_message(f"Download failed: {type(e).__name__}: {e}\n")) from e
        if not self._has_files():
            raise DataNotFoundError(self._missing_message("Download finished but the files are still missing.\n"))

    # ------------------------------------------------------------------------------------------------ loading
    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """``(images (N, C, H, W) float32, labels (N,) int64)`` of the official ``"train"`` or ``"test"`` set,
        normalized per channel when ``normalize`` is on."""
        if self.spec.files == "torchvision":
            images, labels = self._read_torchvision(split)
        else:
            images, labels = self._read_idx(split)
        x = images.float().div_(255.0)  # (N, C, H, W) in [0, 1]
        if self.spec.tinted:
            x = tint_per_class(resize(x, self.spec.shape[-1]), labels)  # (N, 3, 32, 32)
        if self.spec.by_hue:
            x, labels, _ = hue_classes(x, labels, len(HUE_NAMES), self.spec.shape[-1])  # (N, 3, 32, 32), 100 classes
        if self.normalize:
            x = x.sub_(torch.tensor(self.mean).view(1, -1, 1, 1)).div_(torch.tensor(self.std).view(1, -1, 1, 1))
        return x, labels

    def _read_torchvision(self, split: str) -> tuple[Tensor, Tensor]:
        """``(uint8 images (N, C, H, W), labels (N,))`` through torchvision's own dataset class."""
        root = self.torchvision_root()
        if root is None:
            raise DataNotFoundError(self._missing_message())
        cls = getattr(torchvision.datasets, self.spec.torchvision_name)
        try:
            ds = cls(str(root), train=split == "train", download=False)
        except RuntimeError as e:  # "Dataset not found or corrupted": a file's MD5 does not match
            raise DataNotFoundError(self._missing_message(f"torchvision could not read it: {e}\n")) from e
        self._read_classes = tuple(ds.classes)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
        return images, torch.as_tensor(ds.targets).long()

    def _read_idx(self, split: str) -> tuple[Tensor, Tensor]:
        """``(uint8 images (N, 1, 28, 28), labels (N,))`` from the IDX files, checked."""
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
        return images.unsqueeze(1), labels.long()

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
