"""The four seed architectures, as plain ``nn.Module``s.

Every layer is a named submodule (ReLU and max-pool included, no functional calls, no in-place ReLU), so
callbacks address layers by name (``net.conv_1``, ``dict(net.named_children())["relu_2"]``) and hooks see every
stage. Each class is an ``nn.Sequential`` built from an ordered dict: the forward pass reads top to bottom in the
order the layers are listed. Input ``(N, 1, 28, 28)``, output logits ``(N, 10)``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["MLP", "SimpleCNN", "LeNet5", "DeepCNN", "ARCHITECTURES"]


class MLP(nn.Sequential):
    """One hidden layer perceptron (source: hidden 128, batch 50, 10 epochs, lr 0.01 decayed to 0.001).

    Layers and output shapes for an input ``(N, 1, 28, 28)``:
        flatten  (N, 784)
        fc_1     (N, hidden)      784 -> hidden
        relu_1   (N, hidden)
        fc_2     (N, num_classes) hidden -> num_classes
    """

    def __init__(self, hidden: int = 128, num_classes: int = 10) -> None:
        if hidden < 1 or num_classes < 2:
            raise ValueError(f"MLP needs hidden >= 1 and num_classes >= 2, got hidden={hidden}, num_classes={num_classes}")
        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(),  # (N, 784)
                fc_1=nn.Linear(28 * 28, hidden),  # (N, hidden)
                relu_1=nn.ReLU(),  # (N, hidden)
                fc_2=nn.Linear(hidden, num_classes),  # (N, num_classes)
            )
        )


class SimpleCNN(nn.Sequential):
    """Two conv stages and two fully-connected layers.

    Layers and output shapes for an input ``(N, 1, 28, 28)``:
        conv_1      (N, 8, 28, 28)   8 @ 3x3, pad 1
        relu_1      (N, 8, 28, 28)
        max_pool_1  (N, 8, 14, 14)
        conv_2      (N, 16, 14, 14)  16 @ 3x3, pad 1
        relu_2      (N, 16, 14, 14)
        max_pool_2  (N, 16, 7, 7)
        flatten     (N, 784)
        fc_1        (N, 64)          784 -> 64
        relu_3      (N, 64)
        fc_2        (N, num_classes) 64 -> num_classes
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                conv_1=nn.Conv2d(1, 8, kernel_size=3, padding=1),  # (N, 8, 28, 28)
                relu_1=nn.ReLU(),
                max_pool_1=nn.MaxPool2d(2),  # (N, 8, 14, 14)
                conv_2=nn.Conv2d(8, 16, kernel_size=3, padding=1),  # (N, 16, 14, 14)
                relu_2=nn.ReLU(),
                max_pool_2=nn.MaxPool2d(2),  # (N, 16, 7, 7)
                flatten=nn.Flatten(),  # (N, 784)
                fc_1=nn.Linear(16 * 7 * 7, 64),  # (N, 64)
                relu_3=nn.ReLU(),
                fc_2=nn.Linear(64, num_classes),  # (N, num_classes)
            )
        )


class LeNet5(nn.Sequential):
    """LeNet-5 with ReLU and max-pooling (source: Adam, lr 0.001, batch 128, 15 epochs, seed 42).

    Layers and output shapes for an input ``(N, 1, 28, 28)``:
        conv_1      (N, 6, 28, 28)   6 @ 5x5, pad 2
        relu_1      (N, 6, 28, 28)
        max_pool_1  (N, 6, 14, 14)
        conv_2      (N, 16, 10, 10)  16 @ 5x5
        relu_2      (N, 16, 10, 10)
        max_pool_2  (N, 16, 5, 5)
        flatten     (N, 400)
        fc_1        (N, 120)         400 -> 120
        relu_3      (N, 120)
        fc_2        (N, 84)          120 -> 84
        relu_4      (N, 84)
        fc_3        (N, num_classes) 84 -> num_classes
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                conv_1=nn.Conv2d(1, 6, kernel_size=5, padding=2),  # (N, 6, 28, 28)
                relu_1=nn.ReLU(),
                max_pool_1=nn.MaxPool2d(2),  # (N, 6, 14, 14)
                conv_2=nn.Conv2d(6, 16, kernel_size=5),  # (N, 16, 10, 10)
                relu_2=nn.ReLU(),
                max_pool_2=nn.MaxPool2d(2),  # (N, 16, 5, 5)
                flatten=nn.Flatten(),  # (N, 400)
                fc_1=nn.Linear(16 * 5 * 5, 120),  # (N, 120)
                relu_3=nn.ReLU(),
                fc_2=nn.Linear(120, 84),  # (N, 84)
                relu_4=nn.ReLU(),
                fc_3=nn.Linear(84, num_classes),  # (N, num_classes)
            )
        )


class DeepCNN(nn.Sequential):
    """Four conv stages (32, 64, 128, 256 channels, 3x3 pad 1, each followed by ReLU and 2x2 max-pool).

    Layers and output shapes for an input ``(N, 1, 28, 28)``:
        conv_1 (N, 32, 28, 28)   relu_1   max_pool_1 (N, 32, 14, 14)
        conv_2 (N, 64, 14, 14)   relu_2   max_pool_2 (N, 64, 7, 7)
        conv_3 (N, 128, 7, 7)    relu_3   max_pool_3 (N, 128, 3, 3)
        conv_4 (N, 256, 3, 3)    relu_4   max_pool_4 (N, 256, 1, 1)
        flatten (N, 256)
        dropout (N, 256)         p = ``dropout`` (0 disables it)
        fc_1    (N, num_classes) 256 -> num_classes
    First-layer filters are ``[32, 1, 3, 3]``.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.25) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DeepCNN dropout must be in [0, 1), got {dropout}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = 1
        for i, out_channels in enumerate((32, 64, 128, 256), start=1):
            layers[f"conv_{i}"] = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
            layers[f"relu_{i}"] = nn.ReLU()
            layers[f"max_pool_{i}"] = nn.MaxPool2d(2)
            in_channels = out_channels
        layers["flatten"] = nn.Flatten()  # (N, 256)
        layers["dropout"] = nn.Dropout(dropout)
        layers["fc_1"] = nn.Linear(256, num_classes)  # (N, num_classes)
        super().__init__(layers)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "simple_cnn": SimpleCNN,
    "lenet5": LeNet5,
    "deep_cnn": DeepCNN,
}
