"""Run under ``mpirun -np 2``: NLCG under Horovod keeps every rank's weights and optimizer state identical.

Each rank starts from DIFFERENT weights (seeded by rank) and trains on a DIFFERENT half of every global
batch, so both the broadcast and the allreduce matter. After STEPS steps of NLCG-PR (BFGS, step line
search, so every kind of state is exercised), rank 0 gathers all model and optimizer variables, replays the
same global batches in one process (one mean gradient over the union of the halves), and writes a JSON
report to OUT. Usage: mpirun -np 2 python tests/mpi_nlcg_worker.py OUT.json
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import horovod.tensorflow as hvd  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import optimizers  # noqa: E402

STEPS, GLOBAL_BATCH, LR = 12, 32, 8.0  # checks at t = 5, 10; LR 8 makes the loss rise there

# Horovod: one rank per process; two ranks share this 2-core machine, one thread each.
hvd.init()
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

rng = np.random.default_rng(0)
x = rng.normal(size=(STEPS * GLOBAL_BATCH, 6)).astype(np.float32)
y = np.argmax(x @ rng.normal(size=(6, 3)) + rng.gumbel(size=(len(x), 3)), axis=1).astype(np.int32)


def model_and_optimizer(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3)]
    )
    opt = optimizers.get("nlcg-pr", LR)
    opt.build(model.trainable_variables)
    return model, opt


def flat(variables):
    return np.concatenate([np.ravel(v.numpy()).astype(np.float64) for v in variables])


def make_step(model, opt, allreduce):
    @tf.function(jit_compile=False)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if allreduce:
            # Horovod: average gradients (one grouped collective) and the loss over the ranks.
            grads = hvd.grouped_allreduce(grads, op=hvd.Average)
            loss = hvd.allreduce(loss, op=hvd.Average, name="loss")
        opt.apply(grads, model.trainable_variables, loss=loss)
        return loss

    return step


def gathered_spread(values):
    """max over elements of (max over ranks - min over ranks)."""
    every_rank = hvd.allgather(tf.constant(values[None, :])).numpy()
    return float(np.max(every_rank.max(axis=0) - every_rank.min(axis=0)))


model, opt = model_and_optimizer(seed=1 + hvd.rank())  # different on every rank until the broadcast
initial_spread = gathered_spread(flat(model.variables))
# Horovod: broadcast the tf.Variables behind Keras 3's variables (weights, then the built optimizer's state).
hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
hvd.broadcast_variables([v.value for v in opt.variables], root_rank=0)

local = GLOBAL_BATCH // hvd.size()
step = make_step(model, opt, allreduce=True)
alphas, backtracks, local_losses = [], [], []
for t in range(STEPS):
    lo = t * GLOBAL_BATCH + hvd.rank() * local  # this rank's half of global batch t
    xb, yb = x[lo : lo + local], y[lo : lo + local]
    local_losses.append(
        float(np.mean(keras.losses.sparse_categorical_crossentropy(yb, model(xb), from_logits=True)))
    )
    step(xb, yb)
    diag = opt.diagnostics()
    alphas.append(float(diag["alpha"]))
    backtracks.append(float(diag["backtrack"]))

weights, state = flat(model.variables), flat(opt.variables)
report = {
    "size": hvd.size(),
    "initial_weight_spread": initial_spread,
    "first_local_loss_spread": gathered_spread(np.array(local_losses[:1])),
    "weight_spread": gathered_spread(weights),
    "state_spread": gathered_spread(state),
    "iterations": int(opt.iterations),
    "alphas": alphas,
    "backtracks": backtracks,
}

if hvd.rank() == 0:
    # One process, the same global batches, one mean gradient over all GLOBAL_BATCH examples.
    ref_model, ref_opt = model_and_optimizer(seed=1)
    w0 = flat(ref_model.trainable_variables)
    ref_step = make_step(ref_model, ref_opt, allreduce=False)
    for t in range(STEPS):
        ref_step(x[t * GLOBAL_BATCH : (t + 1) * GLOBAL_BATCH], y[t * GLOBAL_BATCH : (t + 1) * GLOBAL_BATCH])
    ref_weights = flat(ref_model.trainable_variables)
    report["single_process_max_abs_diff"] = float(
        np.max(np.abs(flat(model.trainable_variables) - ref_weights))
    )
    report["total_weight_change"] = float(np.max(np.abs(ref_weights - w0)))
    report["single_process_alpha"] = float(ref_opt.diagnostics()["alpha"])
    with open(sys.argv[1], "w") as f:
        json.dump(report, f, indent=1)
