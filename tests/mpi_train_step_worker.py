"""Run under mpirun (or alone): 3 steps of the harness's train step on a fixed BN-free problem.

With 2 workers each rank gets one half of every global batch (micro 16, accumulation 1); with 1 worker
the same global batch arrives as two micro-batches of 16 (accumulation 2). Both must end with the same
weights, and the same squared norms of the gradient noise scale at each step.
Usage: python mpi_train_step_worker.py OUT.npz [optimizer]
"""

import sys

import keras
import numpy as np
import tensorflow as tf

import optimizers
from bench import config, distributed, schedule, train

out, opt_name = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "momentum")
world = distributed.init()
cfg = config.make({"weight_decay": 1e-3, "optimizer": opt_name})
global_batch, micro, steps = 32, 16, 3
accumulation = global_batch // (micro * world.size)

rng = np.random.default_rng(0)
x = rng.normal(size=(steps * global_batch, 8, 8, 3)).astype(np.float32)
y = rng.integers(0, 10, size=steps * global_batch).astype(np.int32)
# This rank's micro-batches, in the order the train step pulls them: step s, micro-batch a.
local = global_batch // world.size
idx = [np.arange(s * global_batch + world.rank * local, s * global_batch + (world.rank + 1) * local)
       for s in range(steps)]
micro_batches = [(x[i[a * micro:(a + 1) * micro]], y[i[a * micro:(a + 1) * micro]])
                 for i in idx for a in range(accumulation)]
ds = tf.data.Dataset.from_generator(lambda: iter(micro_batches), output_signature=(
    tf.TensorSpec((micro, 8, 8, 3), tf.float32), tf.TensorSpec((micro,), tf.int32)))

keras.utils.set_random_seed(1)
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
lr = schedule.WarmupStepDecay(peak=0.2, init=0.05, warmup_steps=2, boundaries=[])
opt = optimizers.get(opt_name, lr)
opt.build(model.trainable_variables)
if world.size > 1:
    distributed.broadcast_state(model, opt)
step = train.make_train_step(model, opt, lr, cfg, world, accumulation, num_classes=10)
it = iter(ds)
outs = [step(it) for _ in range(steps)]
losses = [float(loss) for loss, _, _ in outs]
# the gradient noise scale's squared norms of each step (tests/test_noise_scale.py)
sq = {k: np.array([float(diag[k]) for _, _, diag in outs]) for k in ("grad_sq_small", "grad_sq_big")}
if world.is_chief:
    np.savez(out, *[w.numpy() for w in model.trainable_weights], losses=np.array(losses), **sq)
