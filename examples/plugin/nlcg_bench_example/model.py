"""A small CNN for small images: two conv-BN-ReLU stages (the second strided), global average pooling and a
dense classifier. Functional (keras.Input ... keras.Model), so the harness's PreciseBN finds its
BatchNormalization layers; it returns logits (no softmax), as the contract asks."""

from __future__ import annotations

import keras
from keras import layers


def build(input_shape, num_classes, filters=16, dropout=0.0):
    """The model for images of ``input_shape`` (H, W, C) and ``num_classes`` classes; ``filters``: the first
    stage's width (the second has twice as many); ``dropout``: before the classifier (0: none)."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for stage, (width, strides) in enumerate(((filters, 1), (2 * filters, 2))):
        x = layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False, name=f"conv{stage}")(x)
        x = layers.BatchNormalization(name=f"bn{stage}")(x)
        x = layers.ReLU(name=f"relu{stage}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="small_cnn")
