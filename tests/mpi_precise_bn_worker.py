"""PreciseBN statistics on this rank (one process or under mpirun): saves argv[1]-<rank>.npz for the test."""

import os
import sys

import keras
import numpy as np

from bench import config, data, distributed, evaluate, models


def main(out: str) -> None:
    world = distributed.init() if "OMPI_COMM_WORLD_SIZE" in os.environ else distributed.World()
    cfg = config.make({"dataset": "synthetic", "synthetic_image_size": 8, "synthetic_train_size": 300,
                       "width": 4, "precise_bn_images": 240, "per_worker_batch": 40})
    info = data.info(cfg)
    keras.utils.set_random_seed(0)
    model = models.build(cfg.model, info.image_shape, info.num_classes, cfg.width, cfg.bn_momentum)
    stats = evaluate.make_precise_bn(model, world)(
        data.precise_bn_dataset(cfg, workers=world.size, rank=world.rank, batch=cfg.per_worker_batch))
    np.savez(f"{out}-{world.rank}.npz", *stats)


if __name__ == "__main__":
    main(sys.argv[1])
