"""The four seed architectures, as plain ``nn.Module``s.

Every layer is a named submodule (ReLU and max-pool included, no functional calls, no in-place ReLU), so
callbacks address layers by name (``net.conv_1``, ``dict(net.named_children())["relu_2"]``) and hooks see every
stage. Each class is an ``nn.Sequential`` built from an ordered dict: the forward pass reads top to bottom in the
order the layers are listed. Input ``(N, 1, 28, 28)``, output logits ``(N, 10)``.

``ResNet18`` is the example beyond MNIST: torchvision's own ResNet-18 adapted to 32 px inputs (CIFAR-10); its
layers keep torchvision's nested names (``conv1``, ``layer1.0.conv1``, ..., ``fc``).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

__all__ = ["MLP", "SimpleCNN", "LeNet5", "DeepCNN", "ResNet18", "ARCHITECTURES"]


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
            raise ValueError(
                f"MLP needs hidden >= 1 and num_classes >= 2, got hidden={hidden}, num_classes={num_classes}"
            )
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


class ResNet18(ResNet):
    """torchvision's ResNet-18 (``torchvision.models.resnet18(weights=None)``), adapted to small inputs.

    With ``small_input`` (for 32x32 images such as CIFAR-10) the first conv is 3x3 stride 1 and there is no
    max-pool, as in the CIFAR ResNets of He et al. (2016): the 7x7 stride-2 stem and the pool would shrink 32 px to
    8 px before the first block. ReLUs are not in place, so a hook on a BatchNorm sees its own output, not the ReLU's.

    Layers and output shapes for an input ``(N, in_channels, 32, 32)`` with ``small_input``:
        conv1    (N, 64, 32, 32)   64 @ 3x3, stride 1, pad 1, no bias
        bn1, relu (N, 64, 32, 32)
        maxpool  (N, 64, 32, 32)   an identity
        layer1   (N, 64, 32, 32)   two BasicBlocks: layer1.0.conv1, layer1.0.bn1, ..., layer1.1.conv2, ...
        layer2   (N, 128, 16, 16)  the first block strides by 2 (layer2.0.downsample.0 is its 1x1 shortcut conv)
        layer3   (N, 256, 8, 8)
        layer4   (N, 512, 4, 4)
        avgpool  (N, 512, 1, 1)
        fc       (N, num_classes)  512 -> num_classes (flattened in ``forward``, no Flatten module)
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, small_input: bool = True) -> None:
        if in_channels not in (1, 3) or num_classes < 2:
            raise ValueError(
                f"ResNet18 needs in_channels 1 or 3 and num_classes >= 2, got in_channels={in_channels}, "
                f"num_classes={num_classes}"
            )
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)  # = torchvision's resnet18(weights=None)
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's init
        for m in self.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "simple_cnn": SimpleCNN,
    "lenet5": LeNet5,
    "deep_cnn": DeepCNN,
}
