import numpy as np
import pytest

from bench import models


@pytest.mark.parametrize(
    "name, published",
    # He et al. 2016 (Table 6, 10 classes): 0.27M, 0.46M, 0.85M. Our first block of each stage projects
    # its shortcut with a 1x1 conv (TF official ResNet v2), which adds 16*16 + 16*32 + 32*64 = 2816.
    [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet56", 0.85e6)],
)
def test_cifar_parameter_counts(name, published):
    m = models.build(name, (32, 32, 3), 10)
    n = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert abs(n - published) / published < 0.02, n


def test_resnet32_exact_count():
    # stem 432; per stage: projection + n blocks of 2 convs + 2 BNs (gamma, beta); final BN; dense.
    m = models.build("resnet32", (32, 32, 3), 10)
    convs = 3 * 3 * 3 * 16 + 16 * 16 + 16 * 32 + 32 * 64
    for c_in, c in [(16, 16), (16, 32), (32, 64)]:
        convs += 9 * c_in * c + 9 * c * c + 4 * (9 * c * c + 9 * c * c)
    # first block: BN(c_in) + BN(c); 4 more blocks: 2 x BN(c); 2 parameters per channel
    bns = sum(2 * (c_in + c) + 4 * 2 * 2 * c for c_in, c in [(16, 16), (16, 32), (32, 64)]) + 2 * 64
    dense = 64 * 10 + 10
    assert sum(int(np.prod(w.shape)) for w in m.trainable_weights) == convs + bns + dense


def test_resnet50_matches_keras_applications_count():
    m = models.build("resnet50", (224, 224, 3), 1000)
    assert m.count_params() == 25_636_712  # keras.applications' published ResNet50 size


def test_output_shape_and_decayed_weights_exclude_bn():
    m = models.build("resnet8", (28, 28, 1), 10, width=8)
    assert m(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)
    decayed = {id(w) for w in models.decayed_weights(m)}
    bn = [w for layer in m.layers if "bn" in layer.name for w in layer.trainable_weights]
    assert bn and not any(id(w) in decayed for w in bn)
    assert len(decayed) == len(m.trainable_weights) - len(bn)


def test_unknown_model():
    with pytest.raises(ValueError, match="resnet32"):
        models.build("resnet33", (32, 32, 3), 10)
