"""The model's training FLOPs per image, counted from its layers (``FLOPS_CONVENTION``): the numerator of
bench.json's ``flops_share`` (times the train step's images/s, over the machine's matmul peak). A pure
function of the built model, tested by hand.
"""

from __future__ import annotations

import numpy as np

FLOPS_CONVENTION = ("Conv2D and Dense only: forward = 2 x multiply-accumulates (from output shapes and kernel "
                    "sizes; biases, BatchNorm, activations, pooling and the optimizer not counted); "
                    "forward + backward = 3 x forward (gradients of inputs and of weights each cost one forward)")


def layer_macs(layer) -> int:
    """Multiply-accumulates of one forward pass of ``layer`` for ONE example (0 for layers not counted).

    Conv2D: H_out x W_out x C_out x (k_h x k_w x C_in / groups) (the kernel is [k_h, k_w, C_in/groups, C_out]).
    Dense: (positions) x C_in x C_out, positions = product of the output's inner dimensions (1 for a vector)."""
    from keras import layers  # here: importing this module does not start Keras (bench.json names the convention)

    if isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.DepthwiseConv2D | layers.Conv2DTranspose):
        kh, kw, cin_per_group, cout = layer.kernel.shape
        return int(np.prod(layer.output.shape[1:-1])) * cout * kh * kw * cin_per_group
    if isinstance(layer, layers.Dense):
        cin, cout = layer.kernel.shape
        return int(np.prod(layer.output.shape[1:-1], dtype=np.int64)) * cin * cout
    return 0


def forward_flops(model) -> int:
    """FLOPs of one forward pass for one example (2 x MACs of Conv2D and Dense; nested models included)."""
    total = 0
    for layer in model.layers:
        total += forward_flops(layer) if hasattr(layer, "layers") else 2 * layer_macs(layer)
    return total


def train_flops_per_image(model) -> int:
    """FLOPs of forward + backward for one example, by FLOPS_CONVENTION (3 x forward)."""
    return 3 * forward_flops(model)
