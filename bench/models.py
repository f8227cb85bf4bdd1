"""Models: the pre-activation ResNet (v2) CIFAR family and ResNet-50 from keras.applications (``BUILTIN``), and
plug-ins (bench.components: an entry point of group ``nlcg_bench.models`` or ``"package.module:attribute"``):
a callable ``build(input_shape, num_classes, **model_hparams)`` returning a ``keras.Model`` that outputs
logits [batch, num_classes], built under the run's dtype policy like a built-in (its logits cast to float32
when the policy computes in 16 bits); the run config's ``[model_hparams]`` table is passed to it, and its
defaults come from its signature (``plugin_defaults``). ``check`` builds it once when the config is checked.
Which weights take L2 is the harness's rule for every model (``decayed_weights``): every trainable weight
except those of normalisation layers (BatchNormalization, LayerNormalization, GroupNormalization), found in
nested layers too. ``bn_eval = "precise"`` recomputes the statistics of a functional model's own
BatchNormalization layers; a plug-in whose BatchNormalization layers sit in a nested model, or that is not
functional, is checked to use ``bn_eval = "moving"``.

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
BUILTIN = (*CIFAR_DEPTHS, "resnet50")  # the built-in models (bench.config.MODELS); every other name is a plug-in's


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
          precision: str = "float32", model_hparams: dict | None = None) -> keras.Model:
    """Build model ``name`` (BUILTIN, or a plug-in's name) for images of ``input_shape`` (H, W, C), its layers
    under the dtype policy ``precision`` (bench.config.PRECISIONS; the weights are float32 in every one).
    ``width`` and ``bn_momentum`` are the CIFAR family's; ``model_hparams`` a plug-in's (ValueError for a
    built-in given any)."""
    if name in BUILTIN:
        if model_hparams:
            raise ValueError(f"model = {name!r} is built in and takes no model_hparams (its fields are width and "
                             f"bn_momentum); got {', '.join(sorted(model_hparams))}")
        with dtype_policy(precision):
            if name == "resnet50":
                return resnet50(input_shape, num_classes)
            return cifar_resnet(CIFAR_DEPTHS[name], input_shape, num_classes, width, bn_momentum, name=name)
    return _plugin(name, tuple(input_shape), num_classes, precision, dict(model_hparams or {}))


def _plugin(name: str, input_shape: tuple, num_classes: int, precision: str, model_hparams: dict) -> keras.Model:
    """A plug-in's ``build(input_shape, num_classes, **model_hparams)``, checked (ConfigError naming its reference
    for a call that does not bind, raises, or returns anything but a keras.Model), under the dtype policy, its
    logits cast to float32 when the policy computes in 16 bits."""
    from bench import components
    from bench.config import ConfigError

    fn, plugin = components.load("model", name, builtin=BUILTIN)
    where = f"model = {name!r}"
    components.check_call(where, plugin.reference, fn, (input_shape, num_classes), model_hparams, "model")
    with dtype_policy(precision):
        try:
            model = fn(input_shape, num_classes, **model_hparams)
        except Exception as e:  # noqa: BLE001 - a plug-in may raise anything; the user needs one line
            shown = "".join(f", {k}={v!r}" for k, v in model_hparams.items())
            raise ConfigError(f"{where}: {plugin.reference}({input_shape}, {num_classes}{shown}) raised "
                              f"{type(e).__name__}: {' '.join(str(e).split())}") from None
        if not isinstance(model, keras.Model):
            raise ConfigError(f"{where}: {plugin.reference}(input_shape, num_classes, **model_hparams) built a "
                              f"{type(model).__module__}.{type(model).__qualname__}, not a keras.Model")
        if keras.config.dtype_policy().compute_dtype != "float32":
            cast = layers.Activation("linear", dtype="float32", name="logits_float32")
            if _functional(model):  # the cast on its output: its layers stay its own (PreciseBN finds them)
                return keras.Model(model.inputs, cast(model.outputs[0]), name=model.name)
            inputs = keras.Input(shape=input_shape, name="images")
            model = keras.Model(inputs, cast(model(inputs)), name=model.name)
    return model


def _functional(model) -> bool:
    """Whether ``model`` is a functional keras.Model (built from keras.Input: its graph of layers is known)."""
    try:
        return bool(model.inputs) and len(model.outputs) == 1
    except (AttributeError, ValueError):
        return False


def plugin_defaults(name: str) -> dict:
    """A plug-in model's hyperparameters and their defaults, from its signature (after input_shape and
    num_classes): what ``[model_hparams]`` resolves against, as an optimizer's hparams against its
    registry defaults. {} for a built-in."""
    if name in BUILTIN:
        return {}
    from bench import components

    fn, _ = components.load("model", name, builtin=BUILTIN)
    return components.signature_defaults(fn, skip=2)


def check(name: str, input_shape, num_classes: int, model_hparams: dict | None = None, bn_eval: str = "precise"):
    """Build a plug-in model once, float32, and check what its contract says and the run needs: a keras.Model
    (``build``) whose output on a batch of 2 is [2, num_classes]; with ``bn_eval = "precise"``, BatchNormalization
    layers only where PreciseBN finds them (a functional model's own layers). ConfigError, one line naming the
    reference. Nothing to do for a built-in."""
    if name in BUILTIN:
        return
    import numpy as np

    from bench import components
    from bench.config import ConfigError

    _, plugin = components.load("model", name, builtin=BUILTIN)
    where = f"model = {name!r}: {plugin.reference}"
    model = build(name, input_shape, num_classes, model_hparams=model_hparams)
    try:
        out = model(np.zeros((2, *input_shape), np.float32), training=False)
    except Exception as e:  # noqa: BLE001 - a plug-in may raise anything; the user needs one line
        raise ConfigError(f"{where}: its model raised {type(e).__name__} on a batch of images {(2, *input_shape)}: "
                          f"{' '.join(str(e).split())}") from None
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, num_classes):
        raise ConfigError(f"{where}: its model outputs shape {shape} for a batch of 2; expected logits "
                          f"(2, {num_classes}): one per class, before the softmax")
    nested = [layer for layer in _walk(model) if isinstance(layer, layers.BatchNormalization)]
    own = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    if bn_eval == "precise" and nested and (len(nested) != len(own) or not _functional(model)):
        raise ConfigError(f"{where}: bn_eval = 'precise' recomputes the BatchNormalization statistics of a "
                          "functional model's own layers, and this model's are nested or it is not functional; "
                          "set bn_eval = 'moving' (or build it with keras.Input ... keras.Model(inputs, logits))")


def seeded(cfg, info, keep_kernel_cache: bool = False) -> keras.Model:
    """Keras' random state seeded with the run's seed (Python, NumPy and TensorFlow), then the run's model for
    the data set ``info`` (bench.data.DatasetInfo) describes: the one way every part of the harness builds
    the model a config names, so that the same seed always gives the same initial weights.

    ``keep_kernel_cache``: seed without clearing TensorFlow's eager kernel cache, which ``tf.random.set_seed``
    does so that a stateful random op run eagerly before starts its sequence again; the clearing also drops every
    instantiated tf.function, and a kept train step (bench.train.Compiled) then pays ~1 s of graph optimisation
    again. Only for what draws no stateful eager random number: the built-in models (Keras initialisers draw
    from keras.random's stateless ops) and the harness's data pipelines (stateless, keyed by the seed)."""
    with kernel_cache_kept() if keep_kernel_cache else contextlib.nullcontext():
        keras.utils.set_random_seed(cfg.seed)
    return build(cfg.model, info.image_shape, info.num_classes, cfg.width, cfg.bn_momentum, cfg.precision,
                 getattr(cfg, "model_hparams", None))


@contextlib.contextmanager
def kernel_cache_kept():
    """``tf.random.set_seed`` within this block sets the seed and leaves TensorFlow's kernel cache as it is."""
    from tensorflow.python import pywrap_tfe

    clear = pywrap_tfe.TFE_ContextClearCaches
    pywrap_tfe.TFE_ContextClearCaches = lambda handle: None
    try:
        yield
    finally:
        pywrap_tfe.TFE_ContextClearCaches = clear


NORMALIZATION = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization)


def decayed_weights(model: keras.Model) -> list:
    """The variables under L2 weight decay, for every model: every trainable weight (kernels, and biases
    where a layer has them) except those of normalisation layers (NORMALIZATION: their scale and offset),
    nested layers included. The built-ins have top-level layers only, which give the list (and its order) as
    before nested layers were looked into."""
    out = []
    for layer in model.layers:
        if isinstance(layer, NORMALIZATION):
            continue
        if not _sublayers(layer):
            out += layer.trainable_weights
            continue
        excluded = {id(w) for inner in _walk(layer) if isinstance(inner, NORMALIZATION)
                    for w in inner.trainable_weights}
        out += [w for w in layer.trainable_weights if id(w) not in excluded]
    return out


def _sublayers(layer) -> list:
    """The layers ``layer`` holds directly (a nested model's, or a custom layer's tracked ones)."""
    inner = getattr(layer, "layers", None)
    if inner is None:
        inner = getattr(layer, "_layers", [])
    return [x for x in inner if isinstance(x, layers.Layer) and x is not layer]


def _walk(layer) -> list:
    """Every layer under ``layer``, at any depth, in order."""
    return [x for inner in _sublayers(layer) for x in (inner, *_walk(inner))]
