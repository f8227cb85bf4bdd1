"""Run configuration: one frozen dataclass, loaded from TOML, overridden by ``--set``, validated once.

Everything a run does is decided here; the rest of the harness reads fields and never re-validates.
Bad input raises ``ConfigError`` (a ValueError) with one line naming the bad value and what is valid;
the CLI turns it into exit code 2 before anything trains or writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from bench.datasets import ABSENT, SPECS
from bench.datasets import NAMES as DATASETS

# The identity rule (its own module, issue 26), re-exported: config.identity, config.ID_VERSION... keep working
from bench.identity import (  # noqa: F401
    ID_VERSION,
    NOT_TRAINING,
    _left_out,
    _native_size,
    canonical,
    config_hash,
    data_check_of,
    hash_fields,
    identity,
    plugins_of,
    why_alike,
)

MODELS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet50")


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the value and what is valid."""


@dataclass(frozen=True)
class RunConfig:
    """One training run. Units are in the names; defaults are docs/nlcg.md section 4 (authors' CIFAR code)."""

    sweep: str = "default"  # results go to <output_dir>/<sweep>/
    output_dir: str = "results"

    # data
    dataset: str = "fashion_mnist"
    data_dir: str = ""  # "" -> $CIFAR_DIR / $IMAGENET_DIR, or Debian's folder for fashion_mnist
    augment: bool = True  # pad 4 + random crop + horizontal flip (random-resized-crop for imagenet)
    image_size: int = 0  # in-memory datasets: area-downsample images to image_size^2 (0: native size)
    validation_size: int = 0  # images held out of the training set (a fixed draw) and reported as val_top1
    # in-memory datasets: train on a fixed draw of this many of the remaining training images (0: all of them),
    # the same draw for every run seed; keeps a large data set's steps per epoch at a smaller cost per epoch
    train_subset: int = 0
    synthetic_image_size: int = 32  # synthetic dataset only
    synthetic_channels: int = 3
    synthetic_classes: int = 10
    synthetic_train_size: int = 8192
    synthetic_test_size: int = 1024

    # model
    model: str = "resnet8"
    width: int = 16  # base filters of the CIFAR ResNet family
    bn_momentum: float = 0.99
    weight_decay: float = 2e-4  # L2 in the loss (0.5 * sum w^2), BN parameters excluded
    label_smoothing: float = 0.0
    model_hparams: dict = field(default_factory=dict)  # a plug-in model's build(..., **model_hparams) arguments

    # optimizer
    optimizer: str = "momentum"
    hparams: dict = field(default_factory=dict)  # optimizer hyperparameters, see optimizers.REGISTRY
    # optimizer, model and dataset: a built-in name, an entry point's name or "package.module:attribute"
    # (bench.components)

    # batch: global_batch = workers x micro_batch x accumulation (bench.distributed.split_batch)
    global_batch: int = 128
    per_worker_batch: int = 128  # largest micro-batch one worker runs at once (memory bound)

    # budget: steps if > 0, else epochs of the training set
    epochs: float = 3.0
    steps: int = 0

    # learning rate (bench.schedule): peak = base_lr * global_batch / reference_batch
    base_lr: float = 0.1
    reference_batch: int = 256
    init_lr: float = 0.1  # lr at step 0 of the warm-up (capped at the peak)
    warmup_fraction: float = 0.125  # 25 of 200 epochs
    warmup_power: float = 0.5
    decay_fractions: tuple = (0.51, 0.765)  # epochs 102 and 153 of 200
    decay_factor: float = 0.1

    # evaluation and logging
    eval_every_epochs: float = 1.0  # 0: only at the end
    eval_batch: int = 1000  # images per rank and batch of evaluation (changes no result: not in the run id)
    bn_eval: str = "precise"  # BN statistics for evaluation: "precise" (recomputed) or "moving" (the EMAs)
    precise_bn_images: int = 8192  # training images (all ranks together) that "precise" recomputes them from
    precise_bn_batch: int = 1000  # PreciseBN's batch per rank: min(per_worker_batch, this); in the run id
    eval_ema: bool = False  # evaluate an exponential moving average of the weights (authors' CIFAR code)
    ema_decay: float = 0.9999  # its decay, warmed up as min(decay, (1 + t) / (10 + t)) like TF1's
    log_every_steps: int = 1  # one history row every N steps
    target_top1: float = 0.0  # steps_to_target / time_to_target_s: first eval reaching it (0: none)
    checkpoint_every_epochs: float = 0.0  # save the run's state this often, resume from it (0: never)
    tensorboard: bool = True  # TensorBoard events of each attempt in <results_dir>/tensorboard/ (bench.tensorboard)
    save_model: bool = False  # keep the final weights, as evaluated, as <results_dir>/models/<run_id>.keras
    # (`bench train` turns it on unless the config says otherwise; sweeps keep it off: ~0.1-100 MB per run)
    seed: int = 0
    # a search's trial index (bench.search: trial k of its quasi-random sequence; -1: not a trial). Trials of
    # equal values stay distinct runs; at -1 it is left out of the run id, so ids of other runs never moved
    trial: int = -1

    # numerics and compilation (docs/speed.md, docs/nlcg.md section 9): weights, optimizer state and every
    # optimizer computation stay float32 in every precision; logits and the loss are float32
    precision: str = "float32"  # Keras dtype policy of the model: float32, mixed_bfloat16, mixed_float16
    jit_compile: bool = False  # XLA-compile each micro-step's forward + backward (the collective stays outside)
    allreduce_compression: str = "none"  # "fp16": gradients cross the wire as float16 (Horovod), the loss not

    # ------------------------------------------------------------------ derived
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["decay_fractions"] = list(self.decay_fractions)
        return d

    def resolved_hparams(self) -> dict:
        """The optimizer's hyperparameters with the registry's defaults filled in (a plug-in's: its signature's)."""
        import optimizers

        return {**optimizers.entry(self.optimizer).defaults, **self.hparams}

    def resolved_model_hparams(self) -> dict:
        """A plug-in model's hyperparameters with its signature's defaults filled in ({} for a built-in)."""
        if self.model in MODELS:
            return {}
        from bench import models

        return {**models.plugin_defaults(self.model), **self.model_hparams}

    def plugins(self) -> dict:
        """{kind: what a run id hashes of it} for this run's plug-in components (none for built-ins): see
        ``plugins_of``."""
        return plugins_of(self.to_dict())

    def component_columns(self) -> dict:
        """The runs-table columns that say what this run's components are: the optimizer's ``role``;
        ``<kind>_origin``, ``_reference``, ``_version``, ``_source_hash`` of the optimizer, model and dataset
        (built-in: origin "built-in", the rest ""); ``plugins`` (JSON: what the id hashed of them) and the
        resolved ``model_hparams`` (JSON), which let the ids be re-derived from the row alone
        (bench.results, plots) without importing any plug-in."""
        import optimizers
        from bench import components, models
        from bench.datasets import NAMES

        out = {"role": optimizers.role(self.optimizer)}
        for kind, name, builtin in (("optimizer", self.optimizer, optimizers.REGISTRY), ("model", self.model, MODELS),
                                    ("dataset", self.dataset, DATASETS)):
            if name in builtin:
                out.update({f"{kind}_origin": "built-in", f"{kind}_reference": "", f"{kind}_version": "",
                            f"{kind}_source_hash": ""})
            else:
                plugin = components.load(kind, name, builtin={"model": models.BUILTIN, "dataset": NAMES}.get(
                    kind, optimizers.names()))[1]
                out.update(plugin.columns())
        out["plugins"] = json.dumps(self.plugins(), sort_keys=True)
        out["model_hparams"] = json.dumps(self.resolved_model_hparams(), sort_keys=True)
        return out

    def training_fields(self, workers: int) -> dict:
        """Everything that changes the result, canonical (``identity``): the resolved hyperparameters, the
        workers, the data's identity (not its folder), a plug-in's reference and version."""
        return identity(self.to_dict(), workers, hparams=self.resolved_hparams(), plugins=self.plugins(),
                        model_hparams=self.resolved_model_hparams())

    def run_id(self, workers: int) -> str:
        """Hash of ``training_fields``: same training and evaluation, same id. Kept on the config per workers and
        data check (a sweep's chief asks every run's id before each claim; the config is frozen, and data put in
        place since, which changes the check, gives a new id)."""
        kept = self.__dict__.setdefault("_run_ids", {})  # workers -> (data check, run_id)
        if workers not in kept or kept[workers][0] == ABSENT:  # a check found once is the process's (datasets)
            kept[workers] = (data_check_of(self.dataset, self.data_dir), hash_fields(self.training_fields(workers)))
        return kept[workers][1]

    def config_id(self, workers: int) -> str:
        """``run_id`` without the seed: the runs of one configuration (its seeds) share it."""
        return config_hash(self.training_fields(workers))

    def ids(self, workers: int) -> dict:
        """The identity columns of this run's rows: run_id, config_id, id_version, data_check."""
        check = data_check_of(self.dataset, self.data_dir)
        fields = identity(self.to_dict(), workers, hparams=self.resolved_hparams(), data=check,
                          plugins=self.plugins(), model_hparams=self.resolved_model_hparams())
        return {"run_id": hash_fields(fields), "config_id": config_hash(fields), "id_version": ID_VERSION,
                "data_check": check}

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) / self.sweep


BN_EVAL = ("precise", "moving")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies
COMPRESSIONS = ("none", "fp16")  # Horovod's gradient compression (hvd.Compression.none / .fp16)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_TYPES = typing.get_type_hints(RunConfig)
_DEFAULTS = RunConfig().to_dict()
SYNTHETIC_FIELDS = tuple(k for k in FIELDS if k.startswith("synthetic_"))


def show(value) -> str:
    """``repr(value)`` for a one-line message, cut short when long (a 400-digit integer)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "..." + text[-10:]


_EXPECTED = {float: "float (a finite number)", int: "int", bool: "bool (true or false)", str: "str (a string)",
             tuple: "tuple (a list of numbers; in [grid] and [optimizer_overrides], a list of such lists)",
             dict: "dict (a table: [hparams] with one key per hyperparameter)"}
INT_LIMIT = 2**63  # TOML's integers are 64-bit (tomllib reads larger ones); TensorFlow's int64 besides
SEED_LIMIT = 2**32  # keras.utils.set_random_seed seeds NumPy's legacy generator: 0 .. 2**32 - 1
SYNTHETIC_LIMIT = 2**32  # bytes of synthetic images (train + test + class patterns), generated in memory


def _coerce(key: str, value):
    """Check ``value`` against the field's type; ints are accepted for floats, lists for tuples."""
    want = _TYPES[key]
    if isinstance(want, types.GenericAlias):
        want = typing.get_origin(want)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= INT_LIMIT:
            raise ConfigError(f"{key} = {show(value)} is too large; expected a finite number")
        return float(value)
    if want is tuple and isinstance(value, list):
        value = tuple(value)
    if want is int and isinstance(value, bool) or not isinstance(value, want):
        raise ConfigError(f"{key} = {show(value)} has type {type(value).__name__}; expected {_EXPECTED[want]}")
    if want is int and not -INT_LIMIT <= value < INT_LIMIT:
        raise ConfigError(f"{key} = {show(value)} is too large; expected a 64-bit integer")
    return value


def _check_hparams(cfg: RunConfig) -> None:
    """``hparams``: names, types and ranges by the optimizer's rules (optimizers.check_hparams), then the
    optimizer built once (Keras's own checks), every failure one line naming hparams."""
    import optimizers  # heavy (imports keras); only needed here

    for name, value in cfg.hparams.items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= INT_LIMIT:
            raise ConfigError(f"hparams.{name} = {show(value)} is too large; expected a finite number")
    try:
        optimizers.get(cfg.optimizer, 0.1, **cfg.hparams)
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError("hparams: " + " ".join(str(e).split())) from None


def _check_components(cfg: RunConfig) -> None:
    """The optimizer, model and data set: built-ins, or plug-ins that load and meet their contracts
    (bench.components), each failure one line naming the reference. A plug-in model is built once on the data
    set's images (a plug-in data set's arrays are loaded for that; they are cached for the run)."""
    import optimizers  # heavy (imports keras); only needed here
    from bench import components, models

    try:
        optimizers.entry(cfg.optimizer)
    except ValueError as e:
        raise ConfigError(" ".join(str(e).split())) from None
    if cfg.dataset not in DATASETS:
        components.dataset(cfg.dataset, cfg.data_dir, builtin=DATASETS)
    if cfg.model in MODELS:
        if cfg.model_hparams:
            raise ConfigError(f"model_hparams = {show(cfg.model_hparams)}: model = {cfg.model!r} is built in and "
                              "takes none (its fields are width and bn_momentum); valid: {} or a plug-in model")
        return
    components.load("model", cfg.model, builtin=models.BUILTIN)
    shape, classes = _input_of(cfg)
    models.check(cfg.model, shape, classes, cfg.model_hparams, cfg.bn_eval)


def _plugin_train_size(cfg: RunConfig) -> int:
    from bench import components

    return len(components.dataset(cfg.dataset, cfg.data_dir, builtin=DATASETS)[0].train_labels)


def _input_of(cfg: RunConfig) -> tuple[tuple[int, int, int], int]:
    """The model's input shape (image_size applied) and classes, from the data set's facts."""
    if cfg.dataset == "synthetic":
        shape, classes = (cfg.synthetic_image_size, cfg.synthetic_image_size, cfg.synthetic_channels), \
            cfg.synthetic_classes
    elif cfg.dataset in SPECS:
        shape, classes = SPECS[cfg.dataset].image_shape, SPECS[cfg.dataset].num_classes
    else:
        from bench import components

        arrays = components.dataset(cfg.dataset, cfg.data_dir, builtin=DATASETS)[0]
        shape, classes = arrays.image_shape, arrays.num_classes
    if cfg.image_size:
        shape = (cfg.image_size, cfg.image_size, shape[2])
    return tuple(shape), classes


def _check(cfg: RunConfig) -> None:
    """Value checks that need no data and no Horovod (those are in data.check and split_batch)."""

    for k, v in cfg.to_dict().items():
        if isinstance(v, str) and any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ConfigError(f"{k} = {v!r} contains a control character; valid: printable text")
        if _TYPES[k] is float and not math.isfinite(v):
            raise ConfigError(f"{k} = {v!r} must be a finite number")
    _check_components(cfg)
    _check_hparams(cfg)
    positive = ("global_batch", "per_worker_batch", "reference_batch", "width", "eval_batch", "precise_bn_batch",
                "log_every_steps", "synthetic_image_size", "synthetic_channels", "synthetic_classes",
                "synthetic_train_size", "synthetic_test_size", "base_lr", "init_lr", "precise_bn_images")
    for k in positive:
        if not getattr(cfg, k) > 0:
            raise ConfigError(f"{k} = {getattr(cfg, k)!r} must be > 0")
    nonneg = ("epochs", "steps", "weight_decay", "label_smoothing", "eval_every_epochs", "seed", "target_top1",
              "checkpoint_every_epochs", "image_size", "validation_size", "train_subset")
    for k in nonneg:
        v = getattr(cfg, k)
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{k} = {v!r} must be a finite number >= 0")
    if cfg.trial < -1:
        raise ConfigError(f"trial = {cfg.trial!r} must be >= 0 (a search's trial index) or -1 (not a trial)")
    if cfg.steps == 0 and cfg.epochs == 0:
        raise ConfigError("epochs = 0 and steps = 0: give a budget (epochs > 0 or steps > 0)")
    if cfg.dataset == "synthetic":  # generated in memory (bench.data.synthetic): it must fit
        pixels = cfg.synthetic_image_size ** 2 * cfg.synthetic_channels
        size = (cfg.synthetic_train_size + cfg.synthetic_test_size + cfg.synthetic_classes) * pixels
        if cfg.synthetic_image_size > 512 or size > SYNTHETIC_LIMIT:
            raise ConfigError(f"synthetic_image_size = {cfg.synthetic_image_size}, synthetic_channels = "
                              f"{cfg.synthetic_channels}, synthetic_train_size = {cfg.synthetic_train_size}, "
                              f"synthetic_test_size = {cfg.synthetic_test_size}, synthetic_classes = "
                              f"{cfg.synthetic_classes}: {size:,} bytes of generated images; valid: an image size "
                              f"up to 512 and at most {SYNTHETIC_LIMIT:,} bytes")
    images = cfg.synthetic_train_size if cfg.dataset == "synthetic" else SPECS[cfg.dataset].train_size \
        if cfg.dataset in SPECS else _plugin_train_size(cfg)
    for k in ("epochs", "eval_every_epochs", "checkpoint_every_epochs"):  # schedule.to_steps must give an int64
        if (k != "epochs" or not cfg.steps) and not getattr(cfg, k) * images / cfg.global_batch < INT_LIMIT:
            raise ConfigError(f"{k} = {getattr(cfg, k)!r} is more than 2**63 steps of global_batch {cfg.global_batch} "
                              f"on {images} images; valid: a smaller number")
    if cfg.seed >= SEED_LIMIT:
        raise ConfigError(f"seed = {cfg.seed} is too large; valid: 0 .. {SEED_LIMIT - 1}")
    if not cfg.target_top1 <= 1:
        raise ConfigError(f"target_top1 = {cfg.target_top1} must be a top-1 accuracy in [0, 1] (0: none)")
    if not 0 <= cfg.warmup_fraction < 1:
        raise ConfigError(f"warmup_fraction = {cfg.warmup_fraction} must be in [0, 1)")
    if not cfg.warmup_power > 0:  # lr(t) = peak + (init - peak) (1 - t / W) ** power: 0 is no warm-up, < 0 blows up
        raise ConfigError(f"warmup_power = {cfg.warmup_power} must be a finite number > 0")
    fr = cfg.decay_fractions
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in fr)
    if not numeric or not all(0 < x < 1 for x in fr) or any(a >= b for a, b in itertools.pairwise(fr)):
        raise ConfigError(f"decay_fractions = {show(list(fr))} must be strictly increasing numbers in (0, 1)")
    if not 0 < cfg.decay_factor <= 1:
        raise ConfigError(f"decay_factor = {cfg.decay_factor} must be in (0, 1]")
    if not 0 < cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay = {cfg.ema_decay} must be in (0, 1)")
    if not 0 < cfg.bn_momentum < 1:
        raise ConfigError(f"bn_momentum = {cfg.bn_momentum} must be in (0, 1)")
    if cfg.label_smoothing >= 1:
        raise ConfigError(f"label_smoothing = {cfg.label_smoothing} must be in [0, 1)")
    if cfg.bn_eval not in BN_EVAL:
        raise ConfigError(f"bn_eval = {cfg.bn_eval!r} is unknown; valid: {', '.join(BN_EVAL)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision = {cfg.precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    if cfg.allreduce_compression not in COMPRESSIONS:
        raise ConfigError(f"allreduce_compression = {cfg.allreduce_compression!r} is unknown; "
                          f"valid: {', '.join(COMPRESSIONS)}")
    if cfg.dataset == "imagenet" and (cfg.image_size or cfg.validation_size or cfg.train_subset):
        raise ConfigError(f"image_size = {cfg.image_size}, validation_size = {cfg.validation_size}, train_subset = "
                          f"{cfg.train_subset}: they apply to in-memory datasets only; valid for imagenet: 0")
    if cfg.image_size and not 4 <= cfg.image_size <= 512:
        raise ConfigError(f"image_size = {cfg.image_size} must be 0 (native) or in 4..512")
    if not cfg.sweep.strip() or cfg.sweep != cfg.sweep.strip() or cfg.sweep[0] in ".-" \
            or any(c in cfg.sweep for c in "/\\"):
        raise ConfigError(f"sweep = {cfg.sweep!r} must be a plain folder name (the results go to "
                          f"<output_dir>/<sweep>/): not empty, no '/' or '\\', not starting with '.' or '-', "
                          "no surrounding spaces")
    if not cfg.output_dir.strip():
        raise ConfigError(f"output_dir = {cfg.output_dir!r} must name a folder (default: 'results')")


def make(values: dict) -> RunConfig:
    """Build and check a RunConfig from a flat dict (``hparams`` a nested dict)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}; valid: {', '.join(sorted(FIELDS))}"
        )
    cfg = RunConfig(**{k: _coerce(k, v) for k, v in values.items()})
    _check(cfg)
    return cfg


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with a TOML value (``epochs=3``, ``decay_fractions=[0.5]``), else a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} is not of the form key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words: optimizer=rmsprop
    return key, value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Merge ``--set`` items into a config dict; ``hparams.NAME=value`` sets one hyperparameter,
    ``model_hparams.NAME=value`` one of a plug-in model's."""
    hparams = values.get("hparams", {})
    if not isinstance(hparams, dict):
        raise ConfigError(f"hparams = {show(hparams)} has type {type(hparams).__name__}; expected {_EXPECTED[dict]}")
    out = {**values, "hparams": dict(hparams)}
    for item in overrides:
        key, value = parse_override(item)
        if key.startswith("model_hparams."):
            table = out.get("model_hparams", {})
            if not isinstance(table, dict) or not key.split(".", 1)[1]:
                raise ConfigError(f"--set {item!r}: valid: model_hparams.NAME=value, with model_hparams a table")
            out["model_hparams"] = {**table, key.split(".", 1)[1]: value}
        elif key.startswith("hparams."):
            name = key.split(".", 1)[1]
            if not name:
                raise ConfigError(f"--set {item!r} names no hyperparameter; valid: hparams.NAME=value")
            out["hparams"][name] = value
        elif key == "hparams":
            if not isinstance(value, dict):
                raise ConfigError(f"--set {item!r}: hparams = {show(value)} has type {type(value).__name__}; "
                                  "expected a table (hparams={momentum = 0.9}), or hparams.NAME=value")
            out["hparams"] = dict(value)
        else:
            out[key] = value
    return out


# The tables of a sweep file (bench.grid): in a run config, they say it is one.
SWEEP_TABLES = ("grid", "optimizer_hparams", "optimizer_overrides", "launch", "claim", "search")


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None


def load(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Load a run config: TOML file (optional) + ``--set`` overrides, checked."""
    values = read_toml(path) if path else {}
    tables = [k for k in SWEEP_TABLES if k in values]
    if tables:
        raise ConfigError(f"{path} is a sweep file (it has a [{tables[0]}]); run it with: python -m bench sweep "
                          f"{path}")
    if "sweep" not in values and path:
        values["sweep"] = Path(path).stem
    try:
        return make(apply_overrides(values, list(overrides)))
    except ConfigError as e:
        if not path:
            raise
        raise ConfigError(f"{path}: {e}") from None
