"""The identity rule: which fields of a run make its run_id and config_id, in which form, and why the others
are left out.

It lives apart from bench.config (issue 26) because it is a contract of its own: run ids pinned in
tests/test_pinned_ids.py, rows' ``id_version``, bench.results' migration of old rows and plots' re-derivation of
ids from a row all read this rule, not the loading and checking of a config. bench.config re-exports every name
here (``config.identity``, ``config.ID_VERSION``...), so callers may use either.

bench.config imports this module, so this one reads bench.config's field table (FIELDS, the defaults, MODELS,
SYNTHETIC_FIELDS) at call time, never at import: no import cycle.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import TYPE_CHECKING

from bench.datasets import NAMES as DATASETS
from bench.datasets import SPECS, data_check

if TYPE_CHECKING:
    from bench.config import RunConfig

# Fields that change neither training nor the reported result (where, how often, what target). data_dir says
# only where the data is: what the data is enters the identity as ``data`` (bench.datasets.data_check).
NOT_TRAINING = ("sweep", "output_dir", "data_dir", "log_every_steps", "checkpoint_every_epochs",
                "eval_every_epochs", "eval_batch", "target_top1", "tensorboard", "save_model")
ID_VERSION = 2  # the rule of ``identity``; rows without an id_version were written under rule 1 (bench.results)


def canonical(value):
    """``value`` in the one form that identity hashes read: every number a float (1, 1.0 and NumPy's alike),
    tuples as lists, dict keys as strings, anything else as its string."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def hash_fields(d: dict) -> str:
    """The 16 hex digits of a run id: SHA-256 of the canonical fields as sorted JSON."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(fields: dict) -> str:
    """``hash_fields`` without the seed: the id the seeds of one configuration share."""
    return hash_fields({k: v for k, v in fields.items() if k != "seed"})


def identity(values: dict, workers: int | None, *, hparams: dict | None = None, data: str | None = None,
             plugins: dict | None = None, model_hparams: dict | None = None) -> dict:
    """What run_id and config_id hash: the fields of a run that change its training or its reported result,
    canonical (rule ID_VERSION). ``values`` is a config dict: ``RunConfig.to_dict()``, or a runs row's
    ``config`` JSON, which may predate some fields (a missing one takes its default, and precise_bn_batch the
    row's eval_batch, which set PreciseBN's batch before it existed; fields since removed are ignored).

    Left out, because the run never reads them: NOT_TRAINING; the synthetic_* fields unless the data set is
    synthetic; image_size, validation_size and train_subset for imagenet
    (streamed); train_subset at 0 (every image, as before the field existed); width and bn_momentum for resnet50
    (keras.applications builds its own layers); precise_bn_* unless bn_eval is "precise"; ema_decay unless
    eval_ema. Values that train alike are written alike: image_size at the native side is 0 (nothing is
    resampled), precise_bn_batch is the batch PreciseBN runs, min(per_worker_batch, precise_bn_batch).
    The data enter by what they are, not where: the data set's shape, classes and split sizes, and ``data``
    (default: bench.datasets.data_check of the config's folder; synthetic: its config fields). ``hparams``:
    the resolved hyperparameters (default: the registry's defaults under ``values``' hparams).

    Plug-ins (bench.components) add what a built-in's id never had, so built-in ids are unchanged: ``plugins``
    ({kind: {reference, version}}, the dataset's with its ``native_size``; default: ``plugins_of(values)``,
    which imports them; a row's ``plugins`` column otherwise), under the key "plugins"; a plug-in model's
    resolved ``model_hparams`` (its fields, where width and bn_momentum, which it does not read, are left
    out); a plug-in data set's data as ``data``, the hash of its arrays' content (``data_check_of``).
    """
    from bench.config import _DEFAULTS, FIELDS, MODELS  # at call time: bench.config imports this module
    d = {**_DEFAULTS, "precise_bn_batch": values.get("eval_batch", _DEFAULTS["eval_batch"])}
    d.update({k: v for k, v in values.items() if k in FIELDS})
    if plugins is None:
        plugins = plugins_of(d)
    left_out = set(_left_out(d))
    spec = SPECS.get(d["dataset"])
    native = _native_size(d, plugins)
    if d["image_size"] == native:
        d["image_size"] = 0
    d["precise_bn_batch"] = min(d["per_worker_batch"], d["precise_bn_batch"])
    if hparams is None:
        import optimizers  # loads Keras; callers that have the resolved hyperparameters pass them

        hparams = {**optimizers.entry(d["optimizer"]).defaults, **d["hparams"]}
    out = {k: v for k, v in d.items() if k not in left_out}
    out["hparams"] = hparams
    out["workers"] = workers
    if d["dataset"] != "synthetic" and spec is not None:
        out["data"] = {"shape": spec.image_shape, "classes": spec.num_classes, "train_size": spec.train_size,
                       "test_size": spec.test_size,
                       "files": data_check(d["dataset"], d["data_dir"]) if data is None else data}
    elif "dataset" in plugins:  # its facts are its arrays': their content hash says them all
        out["data"] = {"files": data_check_of(d["dataset"], d["data_dir"]) if data is None else data}
    if d["model"] not in MODELS:
        out["model_hparams"] = {**_plugin_model_defaults(d["model"]), **d["model_hparams"]} if model_hparams is None \
            else model_hparams
    if plugins:
        out["plugins"] = plugins
    return canonical(out)


def plugins_of(values: dict) -> dict:
    """{kind: {reference, version}} of the plug-ins config dict ``values`` names (built-ins add nothing), the
    dataset's with ``native_size`` (its images' side, which ``image_size = 0`` stands for). Imports them
    (bench.components), and loads a plug-in data set's arrays (cached for the process)."""
    from bench import components
    from bench.config import _DEFAULTS, MODELS
    from bench.models import BUILTIN

    out = {}
    optimizer = values.get("optimizer", _DEFAULTS["optimizer"])
    import optimizers  # Keras: callers without it (bench.results, plots) pass a row's plugins

    if optimizer not in optimizers.REGISTRY:
        out["optimizer"] = optimizers.entry(optimizer).plugin.identity()
    model = values.get("model", _DEFAULTS["model"])
    if model not in MODELS:
        out["model"] = components.load("model", model, builtin=BUILTIN)[1].identity()
    dataset = values.get("dataset", _DEFAULTS["dataset"])
    if dataset not in DATASETS:
        arrays, plugin = components.dataset(dataset, values.get("data_dir", ""), builtin=DATASETS)
        out["dataset"] = {**plugin.identity(), "native_size": arrays.image_shape[0]}
    return out


def _plugin_model_defaults(name: str) -> dict:
    from bench import models

    return models.plugin_defaults(name)


def data_check_of(dataset: str, data_dir: str) -> str:
    """The data's part of a run's id: bench.datasets.data_check for a built-in (a stat of its files); for a
    plug-in data set, the hash of its arrays' content (bench.components.Arrays.digest)."""
    if dataset in DATASETS:
        return data_check(dataset, data_dir)
    from bench import components

    return components.dataset(dataset, data_dir, builtin=DATASETS)[0].digest


def _left_out(d: dict) -> dict[str, str]:
    """The fields ``identity`` leaves out of the run of config dict ``d`` (every field present), each with why."""
    from bench.config import MODELS, SYNTHETIC_FIELDS
    why = dict.fromkeys(NOT_TRAINING, "it is not part of a run's identity: it changes no training "
                        "(bench.config.NOT_TRAINING)")
    why["data_dir"] = "data_dir says only where the data are: the same files are the same data"
    if d["dataset"] != "synthetic":
        why.update(dict.fromkeys(SYNTHETIC_FIELDS, f"only dataset = 'synthetic' reads it, not {d['dataset']!r}"))
    if d["dataset"] == "imagenet":
        why.update(dict.fromkeys(("image_size", "validation_size", "train_subset"),
                                 "imagenet (streamed) does not read it"))
    if d["model"] == "resnet50":
        why.update(dict.fromkeys(("width", "bn_momentum"), "resnet50 (keras.applications) does not read it"))
    if d["model"] not in MODELS:
        why.update(dict.fromkeys(("width", "bn_momentum"), f"the plug-in model {d['model']!r} does not read it "
                                                           "(its fields are [model_hparams])"))
    why["model_hparams"] = "a built-in model reads no model_hparams" if d["model"] in MODELS else \
        "its resolved value enters the id on its own"
    if d["bn_eval"] != "precise":
        why.update(dict.fromkeys(("precise_bn_images", "precise_bn_batch"), "only bn_eval = 'precise' reads it"))
    if not d["eval_ema"]:
        why["ema_decay"] = "only eval_ema = true reads it"
    if not d.get("train_subset", 0):
        why["train_subset"] = "train_subset = 0: every training image (the field enters the id of subsets only)"
    if d.get("trial", -1) < 0:
        why["trial"] = "trial = -1: the run is not a search's trial (its index enters the id of trials only)"
    return why


def _native_size(d: dict, plugins: dict | None = None) -> int:
    spec = SPECS.get(d["dataset"])
    if spec is None and d["dataset"] != "synthetic":
        return (plugins if plugins is not None else plugins_of(d)).get("dataset", {}).get("native_size", 0)
    return d["synthetic_image_size"] if d["dataset"] == "synthetic" else spec.image_shape[0]


def why_alike(cfg: RunConfig, key: str) -> str:
    """Why runs of ``cfg`` that differ only in field ``key`` are one run (the same ``identity``): one phrase."""
    d = cfg.to_dict()
    why = _left_out(d)
    if key in why:
        return why[key]
    if key == "image_size":
        return (f"image_size {_native_size(d)} is {cfg.dataset}'s native size, which 0 also means: nothing is "
                "resampled, both train alike")
    if key == "precise_bn_batch":
        return (f"PreciseBN runs batches of min(per_worker_batch, precise_bn_batch) = "
                f"{min(cfg.per_worker_batch, cfg.precise_bn_batch)} either way")
    if key == "hparams":
        return "the optimizer's defaults written out train as the defaults"
    return "both train alike"
