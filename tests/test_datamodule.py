import gzip
import math

import numpy as np
import pytest
import torch

from lit_modules.datamodule import DATASETS, DataNotFoundError, IDXError, MNISTDataModule, TensorBatches, read_idx
from tests.conftest import idx_bytes, synthetic_digits, write_dataset, write_idx


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_read_idx_round_trips_images_and_labels(tmp_path, gz):
    x, y = synthetic_digits(37, seed=3)
    px = write_idx(tmp_path / "train-images-idx3-ubyte", x, gz)
    py = write_idx(tmp_path / "train-labels-idx1-ubyte", y, gz)
    assert torch.equal(read_idx(px, expected_ndim=3), torch.from_numpy(x))
    assert torch.equal(read_idx(py, expected_ndim=1), torch.from_numpy(y))


def test_truncated_idx_file_is_named_in_the_error(tmp_path):
    x, _ = synthetic_digits(10, seed=0)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(idx_bytes(x)[:-100])
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte.*truncated.*7840 bytes, found 7740"):
        read_idx(p)


def test_truncated_gzip_and_corrupt_gzip_are_named(tmp_path):
    x, _ = synthetic_digits(50, seed=0)
    good = gzip.compress(idx_bytes(x))
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(IDXError, match="cut-idx3-ubyte.gz.*corrupt or truncated"):
        read_idx(cut)
    bad = tmp_path / "bad-idx3-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(IDXError, match="bad-idx3-ubyte.gz"):
        read_idx(bad)


def test_wrong_magic_and_wrong_kind(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(IDXError, match="not an unsigned-byte IDX file"):
        read_idx(p)
    labels = write_idx(tmp_path / "labels", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(IDXError, match="expected an IDX file with 3 dimensions, found 1"):
        read_idx(labels, expected_ndim=3)
    extra = tmp_path / "extra"
    extra.write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b"\0")
    with pytest.raises(IDXError, match="trailing bytes"):
        read_idx(extra)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_datamodule_splits_normalizes_and_batches(tmp_path, gz):
    write_dataset(tmp_path, gz=gz, n_train=600, n_test=200)
    dm = MNISTDataModule(
        "mnist", data_dir=str(tmp_path), batch_size=64, eval_batch_size=50, val_size=100, download=False
    )
    dm.setup("fit")
    dm.setup("test")
    xt, yt = dm.split("train")
    xv, yv = dm.split("val")
    xs, ys = dm.split("test")
    assert xt.shape == (500, 1, 28, 28) and xv.shape == (100, 1, 28, 28) and xs.shape == (200, 1, 28, 28)
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64
    # Normalized with MNIST's statistics: black pixels map to the low end of pixel_range, white to the top.
    lo, hi = dm.pixel_range
    assert lo == pytest.approx(-0.1307 / 0.3081) and hi == pytest.approx((1 - 0.1307) / 0.3081)
    assert float(xt.max()) == pytest.approx(hi, abs=1e-5) and float(xt.min()) >= lo - 1e-5
    # Validation and training are disjoint: every original image appears in exactly one of them.
    raw = read_idx(next(tmp_path.glob("train-images*")), 3).float().div(255).sub(0.1307).div(0.3081)
    together = torch.cat([xt, xv]).flatten(1)
    assert sorted(together.sum(1).tolist()) == pytest.approx(sorted(raw.flatten(1).sum(1).tolist()), rel=1e-5)
    # Batches: sizes, and one epoch visits every training sample exactly once.
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches) == math.ceil(500 / 64)
    assert [len(b[0]) for b in batches] == [64] * 7 + [500 - 7 * 64]
    assert torch.equal(torch.cat([b[1] for b in batches]).sort().values, yt.sort().values)
    assert [len(b[0]) for b in dm.val_dataloader()] == [50, 50]
    assert sum(len(b[0]) for b in dm.test_dataloader()) == 200


def test_validation_split_is_seeded(idx_dir):
    a = MNISTDataModule("mnist", data_dir=str(idx_dir), val_size=100, seed=1)
    b = MNISTDataModule("mnist", data_dir=str(idx_dir), val_size=100, seed=1)
    c = MNISTDataModule("mnist", data_dir=str(idx_dir), val_size=100, seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.split("val")[0], b.split("val")[0])
    assert not torch.equal(a.split("val")[0], c.split("val")[0])


def test_torchvision_raw_layout_is_found(tmp_path):
    write_dataset(tmp_path / "KMNIST" / "raw", gz=False)
    dm = MNISTDataModule("kmnist", data_dir=str(tmp_path), val_size=100, download=False)
    dm.setup("test")
    assert len(dm.split("test")[0]) == 200
    assert dm.classes[0] == "o" and dm.num_classes == 10


def test_tensor_batches_shuffle_per_epoch_and_shard_across_ranks():
    x = torch.arange(103, dtype=torch.float32).view(-1, 1)
    y = torch.arange(103)
    loader = TensorBatches(x, y, batch_size=10, shuffle=True, seed=5)
    e0 = torch.cat([b for _, b in loader])
    e1 = torch.cat([b for _, b in loader])
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(103))
    assert not torch.equal(e0, e1)  # a new order every epoch
    again = TensorBatches(x, y, batch_size=10, shuffle=True, seed=5)
    assert torch.equal(torch.cat([b for _, b in again]), e0)  # reproducible
    # Two ranks: equal, disjoint training shares; evaluation shares cover every sample.
    r0 = torch.cat([b for _, b in TensorBatches(x, y, 10, shuffle=True, seed=5, rank=0, world_size=2)])
    r1 = torch.cat([b for _, b in TensorBatches(x, y, 10, shuffle=True, seed=5, rank=1, world_size=2)])
    assert len(r0) == len(r1) == 51 and not set(r0.tolist()) & set(r1.tolist())
    v0 = torch.cat([b for _, b in TensorBatches(x, y, 10, rank=0, world_size=2)])
    v1 = torch.cat([b for _, b in TensorBatches(x, y, 10, rank=1, world_size=2)])
    assert len(v0) == len(v1) == 52 and set(v0.tolist()) | set(v1.tolist()) == set(range(103))


def test_bad_arguments_fail_with_what_is_valid(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*fashion_mnist, kmnist, mnist"):
        MNISTDataModule("cifar")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        MNISTDataModule(batch_size=0)
    with pytest.raises(ValueError, match="val_size"):
        MNISTDataModule(val_size=0)
    write_dataset(tmp_path, n_train=50, n_test=10)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=50)
    with pytest.raises(ValueError, match="val_size=50 must be smaller than the training set \\(50 images\\)"):
        dm.setup("fit")


def test_missing_data_with_download_off_says_where_and_what_to_do(tmp_path):
    dm = MNISTDataModule("mnist", data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError) as e:
        dm.prepare_data()
    msg = str(e.value)
    assert "mnist data not found" in msg and str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "--data.download true" in msg and "fashion_mnist" in msg


def test_mismatched_image_and_label_counts(tmp_path):
    write_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(IDXError, match="200 images but .*t10k-labels-idx1-ubyte has 5 labels"):
        dm.setup("test")


def test_class_names():
    assert DATASETS["fashion_mnist"].classes[9] == "Ankle boot"
    assert MNISTDataModule("mnist").classes == tuple("0123456789")
