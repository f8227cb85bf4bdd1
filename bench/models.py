"""Models: the pre-activation ResNet (v2) CIFAR family and ResNet-50 from keras.applications.

CIFAR family (He et al. 2016, "Identity Mappings in Deep Residual Networks"), depth 6n+2: a 3x3 stem
conv with `width` filters, 3 stages of n basic blocks with width, 2*width, 4*width filters and strides
1/2/2, a final BN + ReLU, global average pooling and a dense classifier. Each block is BN-ReLU-conv3x3-
BN-ReLU-conv3x3; the first block of every stage projects its shortcut with a 1x1 conv applied to the
pre-activated input (as the TensorFlow official ResNet v2 that the authors' CIFAR code follows). No conv
bias; BN momentum 0.99 and epsilon 1e-5 (docs/nlcg.md section 4); statistics are per worker, not synchronised.
Parameter counts (10 classes): resnet20 0.27M, resnet32 0.47M, resnet56 0.86M.

Precision: ``build(..., precision=...)`` builds the model under a Keras dtype policy (``float32``,
``mixed_bfloat16``, ``mixed_float16``), scoped to the build: the global policy is restored afterwards, so
other models built in the same process are unaffected. Under a mixed policy the weights are float32 and the
layers compute in 16 bits; the logits are float32 in every precision (the CIFAR family's classifier is a
float32 Dense layer; ResNet-50's logits pass through a float32 cast), so the loss is computed in float32.
"""

from __future__ import annotations

import contextlib

import keras
from keras import layers

CIFAR_DEPTHS = {"resnet8": 1, "resnet14": 2, "resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9,
                "resnet110": 18}


def _bn(momentum: float, name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=momentum, epsilon=1e-5, name=name)


def _conv(filters: int, kernel: int, strides: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                         kernel_initializer="he_normal", name=name)


def _block(x, filters: int, strides: int, project: bool, bn_momentum: float, name: str):
    """Pre-activation basic block; x: [batch, H, W, C] -> [batch, H/strides, W/strides, filters]."""
    pre = layers.ReLU(name=f"{name}_relu1")(_bn(bn_momentum, f"{name}_bn1")(x))
    shortcut = _conv(filters, 1, strides, f"{name}_proj")(pre) if project else x
    y = _conv(filters, 3, strides, f"{name}_conv1")(pre)
    y = layers.ReLU(name=f"{name}_relu2")(_bn(bn_momentum, f"{name}_bn2")(y))
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def cifar_resnet(depth_n: int, input_shape, num_classes: int, width: int = 16, bn_momentum: float = 0.99,
                 name: str = "resnet") -> keras.Model:
    """ResNet v2 of depth 6*depth_n + 2 for small images; logits output [batch, num_classes]."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv(width, 3, 1, "stem_conv")(inputs)
    for stage in range(3):
        filters = width * 2**stage
        for block in range(depth_n):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _block(x, filters, strides, block == 0, bn_momentum, f"stage{stage + 1}_block{block + 1}")
    x = layers.ReLU(name="final_relu")(_bn(bn_momentum, "final_bn")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    # float32 in every precision: the logits and the loss computed from them stay exact under a mixed policy
    logits = layers.Dense(num_classes, kernel_initializer="he_normal", name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


def resnet50(input_shape, num_classes: int) -> keras.Model:
    """ResNet-50 from keras.applications, random init, logits output.

    Note: keras.applications.ResNet50 is ResNet v1 (stride in the first 1x1 conv of a downsampling
    block), not the v1.5 variant of most large-batch papers (stride in the 3x3 conv); v1.5 costs ~12%
    more FLOPs and gains ~0.5% top-1. Recorded here so results are not compared blindly.
    """
    model = keras.applications.ResNet50(weights=None, input_shape=input_shape, classes=num_classes,
                                        classifier_activation=None)
    if keras.config.dtype_policy().compute_dtype == "float32":
        return model
    # under a mixed policy the classifier computes in 16 bits: its logits are cast to float32 for the loss
    logits = layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
    return keras.Model(model.input, logits, name=model.name)


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Keras' global dtype policy set to ``precision`` inside the block, and restored afterwards."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def build(name: str, input_shape, num_classes: int, width: int = 16, bn_momentum: float = 0.99,
          precision: str = "float32") -> keras.Model:
    """Build model ``name`` (see bench.config.MODELS) for images of ``input_shape`` (H, W, C), its layers
    under the dtype policy ``precision`` (bench.config.PRECISIONS; the weights are float32 in every one)."""
    if name != "resnet50" and name not in CIFAR_DEPTHS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join([*CIFAR_DEPTHS, 'resnet50'])}")
    with dtype_policy(precision):
        if name == "resnet50":
            return resnet50(input_shape, num_classes)
        return cifar_resnet(CIFAR_DEPTHS[name], input_shape, num_classes, width, bn_momentum, name=name)


def seeded(cfg, info) -> keras.Model:
    """Keras' random state seeded with the run's seed (Python, NumPy and TensorFlow), then the run's model for
    the data set ``info`` (bench.data.DatasetInfo) describes: the one way every part of the harness builds
    the model a config names, so that the same seed always gives the same initial weights."""
    keras.utils.set_random_seed(cfg.seed)
    return build(cfg.model, info.image_shape, info.num_classes, cfg.width, cfg.bn_momentum, cfg.precision)


def decayed_weights(model: keras.Model) -> list:
    """The variables under L2 weight decay: every trainable weight except BatchNormalization's."""
    return [w for layer in model.layers if not isinstance(layer, layers.BatchNormalization)
            for w in layer.trainable_weights]
