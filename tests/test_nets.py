import pytest
import torch
from torch import nn

from lit_modules.nets import ARCHITECTURES, MLP, DeepCNN, LeNet5, SimpleCNN

EXPECTED = {
    MLP: [("flatten", (784,)), ("fc_1", (128,)), ("relu_1", (128,)), ("fc_2", (10,))],
    SimpleCNN: [
        ("conv_1", (8, 28, 28)),
        ("relu_1", (8, 28, 28)),
        ("max_pool_1", (8, 14, 14)),
        ("conv_2", (16, 14, 14)),
        ("relu_2", (16, 14, 14)),
        ("max_pool_2", (16, 7, 7)),
        ("flatten", (784,)),
        ("fc_1", (64,)),
        ("relu_3", (64,)),
        ("fc_2", (10,)),
    ],
    LeNet5: [
        ("conv_1", (6, 28, 28)),
        ("relu_1", (6, 28, 28)),
        ("max_pool_1", (6, 14, 14)),
        ("conv_2", (16, 10, 10)),
        ("relu_2", (16, 10, 10)),
        ("max_pool_2", (16, 5, 5)),
        ("flatten", (400,)),
        ("fc_1", (120,)),
        ("relu_3", (120,)),
        ("fc_2", (84,)),
        ("relu_4", (84,)),
        ("fc_3", (10,)),
    ],
    DeepCNN: [
        ("conv_1", (32, 28, 28)),
        ("relu_1", (32, 28, 28)),
        ("max_pool_1", (32, 14, 14)),
        ("conv_2", (64, 14, 14)),
        ("relu_2", (64, 14, 14)),
        ("max_pool_2", (64, 7, 7)),
        ("conv_3", (128, 7, 7)),
        ("relu_3", (128, 7, 7)),
        ("max_pool_3", (128, 3, 3)),
        ("conv_4", (256, 3, 3)),
        ("relu_4", (256, 3, 3)),
        ("max_pool_4", (256, 1, 1)),
        ("flatten", (256,)),
        ("dropout", (256,)),
        ("fc_1", (10,)),
    ],
}


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_every_layer_is_named_and_has_the_documented_shape(cls):
    net = cls().eval()
    shapes = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
        for n, m in net.named_children()
    ]
    out = net(torch.randn(3, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert out.shape == (3, 10)
    assert list(shapes.items()) == EXPECTED[cls]
    # The shapes are documented in the class docstring, and ReLUs are modules without in-place.
    for name, _shape in EXPECTED[cls]:
        assert name in cls.__doc__
    assert all(not m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    assert not any(isinstance(m, nn.Sequential) and m is not net for m in net.modules())


def test_first_layer_filters_of_deep_cnn():
    assert DeepCNN().conv_1.weight.shape == (32, 1, 3, 3)
    assert LeNet5().conv_1.weight.shape == (6, 1, 5, 5)


def test_registry_and_bad_arguments():
    assert set(ARCHITECTURES) == {"mlp", "simple_cnn", "lenet5", "deep_cnn"}
    with pytest.raises(ValueError, match="dropout"):
        DeepCNN(dropout=1.5)
    with pytest.raises(ValueError, match="hidden"):
        MLP(hidden=0)
