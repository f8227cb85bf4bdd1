"""One way to name a run's optimizer, model and data set, three sources (``load``):

- a built-in name: ``optimizers.REGISTRY``, ``bench.models.BUILTIN``, ``bench.datasets.SPECS``;
- a name that an installed distribution registers under its kind's entry-point group (``GROUPS``:
  ``nlcg_bench.optimizers``, ``nlcg_bench.models``, ``nlcg_bench.datasets``), e.g. in its pyproject.toml::

      [project.entry-points."nlcg_bench.optimizers"]
      sign-momentum = "nlcg_bench_example.optim:SignMomentum"

- an import reference ``"package.module:attribute"`` (any name with a colon), imported from the Python path
  (``PYTHONPATH``): nothing to install, e.g. a folder of one's own on every node of a cluster.

The contracts (docs/architecture.md, "Bring your own"; each checked when the config is checked, before
anything trains, by the kind's module: ``optimizers.entry``, ``bench.models.build``, ``dataset``):

- optimizer: ``factory(learning_rate, **hparams)`` returning a ``keras.optimizers.Optimizer``;
- model: ``build(input_shape, num_classes, **model_hparams)`` returning a ``keras.Model`` that outputs logits;
- dataset: ``load(data_dir)`` returning ``(train_images, train_labels), (test_images, test_labels)``: uint8
  images [N, H, W, C] (or [N, H, W]: one channel) and integer labels 0..K-1 [N].

Provenance (``Plugin``), recorded in every row of a plug-in's run: where it comes from (``origin``: entry point
or reference), its ``reference`` (an entry point's value: the module and attribute it names), the
``distribution`` that provides it (an entry point's; a reference's when its top-level package is an installed
distribution's), its ``version`` and ``source_hash`` (SHA-256 of the module's source file). The version is the
distribution's when there is one: the author's name for what they released, stable across machines and
install paths, so a study finds its finished runs on a cluster that installed the same release; else
``source-<hash>``: a folder on the Python path has no version, and the file that was imported is all that
tells two of its versions apart. A run's id includes the reference and the version (bench.config.identity);
the source hash is recorded beside it, so an edit of an editable install under an unchanged version shows in
the rows (bump the version to make it other runs).

Light: importlib only; a plug-in's module (and what it imports, usually Keras) is imported on first use. An
error is one ``ConfigError`` line naming the reference and what was wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import ConfigError

KINDS = ("optimizer", "model", "dataset")
GROUPS = {kind: f"nlcg_bench.{kind}s" for kind in KINDS}
CONTRACTS = {
    "optimizer": "factory(learning_rate, **hparams) returning a keras.optimizers.Optimizer",
    "model": "build(input_shape, num_classes, **model_hparams) returning a keras.Model that outputs logits",
    "dataset": "load(data_dir) returning (train_images, train_labels), (test_images, test_labels): uint8 images "
               "[N, H, W, C] or [N, H, W], integer labels 0..K-1",
}
ENTRY_POINT, REFERENCE = "entry point", "reference"
_REFERENCE = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attribute>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


@dataclass(frozen=True)
class Plugin:
    """Where a plug-in component comes from: see the module docstring."""

    kind: str
    name: str  # as the config writes it: an entry point's name, or the reference itself
    origin: str  # ENTRY_POINT or REFERENCE
    reference: str  # "package.module:attribute"
    distribution: str  # the installed distribution that provides it ("" when none does)
    version: str  # the distribution's version, else "source-" + source_hash
    source_hash: str  # 16 hex digits of SHA-256 of the module's source file ("" when it has no file)

    def identity(self) -> dict:
        """What a run id hashes of it: the reference and the version."""
        return {"reference": self.reference, "version": self.version}

    def columns(self) -> dict:
        """The runs-table columns of it: ``<kind>_origin``, ``_reference``, ``_version``, ``_source_hash``."""
        return {f"{self.kind}_origin": self.origin, f"{self.kind}_reference": self.reference,
                f"{self.kind}_version": self.version, f"{self.kind}_source_hash": self.source_hash}

    def describe(self) -> str:
        """One phrase: ``entry point of nlcg-bench-example 0.1.0 (pkg.mod:attr)``, ``reference (source ab12...)``."""
        if self.distribution:
            return f"{self.origin} of {self.distribution} {self.version}: {self.reference}"
        return f"{self.origin} {self.reference}, {self.version}"


def is_reference(name: str) -> bool:
    """Whether ``name`` is an import reference (it has a colon; no built-in or entry-point name does)."""
    return ":" in name


def entry_points(kind: str) -> dict[str, list]:
    """{name: [importlib.metadata.EntryPoint, ...]} of ``kind``'s group, over every installed distribution (a
    name registered twice lists both; ``load`` refuses it)."""
    found: dict[str, list] = {}
    for ep in importlib.metadata.entry_points(group=GROUPS[kind]):
        found.setdefault(ep.name, [])
        if not any(e.value == ep.value and _dist(e) == _dist(ep) for e in found[ep.name]):
            found[ep.name].append(ep)
    return found


def _dist(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else ("", "")


_LOADED: dict[tuple[str, str], tuple[object, Plugin]] = {}  # (kind, name) -> (object, Plugin), for the process


def load(kind: str, name: str, builtin=()) -> tuple[object, Plugin]:
    """The object a plug-in name stands for, and its Plugin record; imported once per process.

    ``builtin``: the kind's built-in names (for the message of a name that is none of the three). Raises
    ConfigError, one line naming the reference: a name that is no built-in, entry point or reference; an
    entry point registered twice; a module that does not import; an attribute it does not have; an object
    that is not callable.
    """
    key = (kind, name)
    if key not in _LOADED:
        _LOADED[key] = _load(kind, name, builtin)
    return _LOADED[key]


def forget() -> None:
    """Forget what was loaded (tests: a plug-in's file rewritten in the same process)."""
    _LOADED.clear()
    _ARRAYS.clear()


def _load(kind: str, name: str, builtin) -> tuple[object, Plugin]:
    where = f"{kind} = {name!r}"
    if is_reference(name):
        match = _REFERENCE.fullmatch(name.strip())
        if not match:
            raise ConfigError(f"{where} is not an import reference of the form package.module:attribute")
        obj, module = _import(where, match["module"], match["attribute"])
        dist, version = _distribution_of(match["module"])
        origin, reference = REFERENCE, name.strip()
    else:
        eps = entry_points(kind).get(name, [])
        if not eps:
            registered = sorted(entry_points(kind))
            valid = ", ".join([*builtin, *registered]) or "none"
            raise ConfigError(f"{where} is unknown; valid: {valid} (built-in{', entry points' if registered else ''}), "
                              f"or an import reference package.module:attribute ({CONTRACTS[kind]})")
        if len(eps) > 1:
            by = "; ".join(f"{' '.join(_dist(ep)) or 'a distribution'} ({ep.value})" for ep in eps)
            raise ConfigError(f"{where}: the entry-point name is registered twice in {GROUPS[kind]}: {by}; "
                              "uninstall one, or name it by its reference package.module:attribute")
        ep = eps[0]
        dist, version = _dist(ep)
        match = _REFERENCE.fullmatch(ep.value.replace(" ", ""))
        if not match:
            raise ConfigError(f"{where}: the entry point of {dist or 'a distribution'} names {ep.value!r}, not a "
                              "reference of the form package.module:attribute")
        label = f"{where} (entry point {GROUPS[kind]} of {dist} {version})"
        obj, module = _import(label, match["module"], match["attribute"])
        origin, reference = ENTRY_POINT, f"{match['module']}:{match['attribute']}"
    if not callable(obj):
        raise ConfigError(f"{where}: {reference} is a {type(obj).__name__}, not callable; expected {CONTRACTS[kind]}")
    digest = source_hash(module)
    plugin = Plugin(kind, name, origin, reference, dist, version or f"source-{digest or 'unknown'}", digest)
    return obj, plugin


def _import(where: str, module_name: str, attribute: str):
    """(the attribute, its module); ConfigError naming what did not import or is missing."""
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - a plug-in's import may raise anything; the user needs one line
        hint = " (is its folder on PYTHONPATH, or its package installed?)" if isinstance(e, ImportError) else ""
        raise ConfigError(f"{where}: module {module_name} does not import{hint}: {type(e).__name__}: "
                          f"{_one_line(e)}") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: module {module_name} ({getattr(module, '__file__', '?')}) names nothing "
                              f"called {attribute!r}")
        obj = getattr(obj, part)
    return obj, module


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _distribution_of(module_name: str) -> tuple[str, str]:
    """(name, version) of the installed distribution whose top-level package ``module_name`` is in, when
    exactly one is; ("", "") otherwise (a folder on the Python path)."""
    top = module_name.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    if len(set(dists)) != 1:
        return "", ""
    dist = importlib.metadata.distribution(dists[0])
    return dist.metadata["Name"], dist.version


def source_hash(module) -> str:
    """16 hex digits of SHA-256 of ``module``'s source file ("" for a module without one)."""
    path = getattr(module, "__file__", None)
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""
    except OSError:
        return ""


def signature_defaults(fn, skip: int) -> dict:
    """The parameters of ``fn`` with defaults after its first ``skip`` positional ones, in order: a plug-in's
    hyperparameters and their defaults, read from its signature as NLCG's are."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p.default for p in params if p.default is not p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_call(where: str, reference: str, fn, args: tuple, kwargs: dict, kind: str) -> None:
    """ConfigError unless ``fn(*args, **kwargs)`` binds to its signature (without calling it)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will say
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {reference}{signature} cannot be called so ({e}); expected "
                          f"{CONTRACTS[kind]}") from None


# ---- data sets: load(data_dir) -> the arrays, checked, their facts and a hash of their content --------------


@dataclass(frozen=True)
class Arrays:
    """A plug-in data set's arrays as its ``load`` returned them, checked: images uint8 [N, H, W, C], labels
    int32 [N]; read-only. ``digest``: 16 hex digits of SHA-256 of every array's shape, dtype and bytes, the
    data's part of a run's id (the content, wherever the files are)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    digest: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(x) for x in self.train_images.shape[1:])


_ARRAYS: dict[tuple[str, str], Arrays] = {}  # (data set, data_dir) -> Arrays, for the process


def dataset(name: str, data_dir: str, builtin=()) -> tuple[Arrays, Plugin]:
    """The arrays of plug-in data set ``name`` (its ``load(data_dir)``), checked and cached for the process,
    and its Plugin record. ConfigError (one line naming the reference) for a plug-in that does not load, a
    load that raises, or arrays that break the contract (``CONTRACTS["dataset"]``)."""
    fn, plugin = load("dataset", name, builtin)
    key = (name, data_dir)
    if key not in _ARRAYS:
        where = f"dataset = {name!r}"
        check_call(where, plugin.reference, fn, (data_dir,), {}, "dataset")
        try:
            out = fn(data_dir)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - a plug-in may raise anything; the user needs one line
            raise ConfigError(f"{where}: {plugin.reference}({data_dir!r}) raised {type(e).__name__}: "
                              f"{_one_line(e)}") from None
        _ARRAYS[key] = _checked(where, plugin.reference, out)
    return _ARRAYS[key], plugin


def _checked(where: str, reference: str, out) -> Arrays:
    """``out`` as Arrays, or ConfigError saying which part breaks the contract."""
    head = f"{where}: {reference}(data_dir) returned"
    try:
        (xtr, ytr), (xte, yte) = out
    except (TypeError, ValueError):
        raise ConfigError(f"{head} a {type(out).__name__}; expected ((train_images, train_labels), (test_images, "
                          "test_labels))") from None
    parts = {}
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 3:
            x = x[..., None]  # [N, H, W]: one channel
        if x.ndim != 4 or x.dtype != np.uint8:
            raise ConfigError(f"{head} {split} images of shape {x.shape} and dtype {x.dtype}; expected uint8 "
                              "[N, H, W, C] (or [N, H, W])")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"{head} {split} labels of shape {y.shape} and dtype {y.dtype}; expected integers [N]")
        if len(x) != len(y) or not len(y):
            raise ConfigError(f"{head} {len(x)} {split} images and {len(y)} labels; expected as many, at least one")
        if y.min() < 0 or y.max() >= 2**31:
            raise ConfigError(f"{head} {split} labels in {y.min()}..{y.max()}; expected 0..K-1")
        parts[split] = (x, y.astype(np.int32))
    if parts["train"][0].shape[1:] != parts["test"][0].shape[1:]:
        raise ConfigError(f"{head} train images {parts['train'][0].shape[1:]} and test images "
                          f"{parts['test'][0].shape[1:]}; expected one shape H, W, C")
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for a in parts[split]:
            a = np.ascontiguousarray(a)
            digest.update(f"{a.shape}{a.dtype.str}".encode())
            digest.update(memoryview(a).cast("B"))
    frozen = []
    for split in ("train", "test"):
        for a in parts[split]:
            a = np.ascontiguousarray(a)
            a.flags.writeable = False
            frozen.append(a)
    classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return Arrays(*frozen, num_classes=classes, digest=digest.hexdigest()[:16])


def loaded_modules() -> list[str]:
    """The modules of the plug-ins loaded in this process (for a message saying what must be importable)."""
    return sorted({p.reference.split(":")[0] for _, p in _LOADED.values()} & set(sys.modules))
