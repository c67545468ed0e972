"""Real Fashion-MNIST (Debian's dataset-fashion-mnist): skipped, with the reason, only where it is absent."""

import lightning.pytorch as pl
import pytest

from lit_modules.classifier import LitClassifier
from lit_modules.datamodule import MNISTDataModule
from lit_modules.nets import LeNet5
from tests.conftest import FASHION_DIR


@pytest.fixture
def fashion(fashion_available):
    if not fashion_available:
        pytest.skip(f"Fashion-MNIST is not in {FASHION_DIR}: apt-get install dataset-fashion-mnist")


def test_fashion_mnist_is_read_from_debian_in_full(fashion, tmp_path):
    dm = MNISTDataModule("fashion_mnist", data_dir=str(tmp_path), download=False)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.split("train")[0]) == 55000 and len(dm.split("val")[0]) == 5000 and len(dm.split("test")[0]) == 10000
    # Normalized with the dataset's own statistics: the training pixels have mean ~0 and std ~1.
    x = dm.split("train")[0]
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01
    assert dm.split("test")[1].bincount().tolist() == [1000] * 10


def test_lenet5_one_epoch_on_fashion_mnist_reaches_85_percent(fashion, tmp_path):
    pl.seed_everything(42)
    dm = MNISTDataModule("fashion_mnist", data_dir=str(tmp_path), batch_size=32, download=False)
    model = LitClassifier(LeNet5())
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(model, dm)
    (result,) = trainer.test(model, dm, verbose=False)
    assert result["test/acc"] >= 0.85
