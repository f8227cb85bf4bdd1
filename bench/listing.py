"""``python -m bench list``: every optimizer, model and data set a run config can name, where each comes from
(built-in; an entry point with its distribution and version; a reference given with ``--optimizer`` /
``--model`` / ``--dataset``), an optimizer's role (baseline or method under test), and each component's
hyperparameters with their defaults. The contracts a plug-in meets are printed with its kind
(bench.components.CONTRACTS), the same text docs/architecture.md and the README give.

A plug-in that fails to load is listed with its one-line error instead of ending the listing: a broken package
must not hide the others. A plug-in data set's facts (shape, classes, sizes) are read from its arrays, which
``--data`` loads (they may be large); a built-in's come from bench.datasets.
"""

from __future__ import annotations

import json

from bench import components
from bench.config import ConfigError, RunConfig


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def _defaults_text(defaults: dict) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in defaults.items()) or "none"


def optimizer_rows(extra=()) -> list[dict]:
    """One dict per optimizer: name, source, role, defaults, hyperparameters (every name [hparams] takes),
    where the defaults come from; or error for a plug-in that does not load."""
    import optimizers

    names = [*optimizers.names(), *sorted(components.entry_points("optimizer")), *extra]
    rows = []
    for name in dict.fromkeys(names):
        try:
            e = optimizers.entry(name)
        except ValueError as err:
            rows.append({"name": name, "source": _origin("optimizer", name), "error": str(err)})
            continue
        rows.append({"name": name, "source": "built-in" if e.plugin is None else e.plugin.describe(),
                     "role": e.role, "defaults": e.defaults, "hyperparameters": sorted(optimizers.valid_hparams(name)),
                     "defaults_from": e.source, "search_space": e.space or {}})
    return rows


def model_rows(extra=()) -> list[dict]:
    """One dict per model: name, source, hyperparameters and defaults (a built-in's: its run-config fields)."""
    from bench import models

    rows = [{"name": name, "source": "built-in", "defaults": {} if name == "resnet50" else
             {"width": RunConfig.width, "bn_momentum": RunConfig.bn_momentum},
             "hyperparameters": [] if name == "resnet50" else ["width", "bn_momentum"],
             "defaults_from": "run-config fields width and bn_momentum" if name != "resnet50" else
             "keras.applications.ResNet50 (no fields)"} for name in models.BUILTIN]
    for name in dict.fromkeys([*sorted(components.entry_points("model")), *extra]):
        try:
            _, plugin = components.load("model", name, builtin=models.BUILTIN)
            defaults = models.plugin_defaults(name)
        except ConfigError as err:
            rows.append({"name": name, "source": _origin("model", name), "error": str(err)})
            continue
        rows.append({"name": name, "source": plugin.describe(), "defaults": defaults,
                     "hyperparameters": sorted(defaults), "defaults_from": "its signature ([model_hparams])"})
    return rows


def dataset_rows(extra=(), load: bool = False) -> list[dict]:
    """One dict per data set: name, source, facts (shape, classes, train and test sizes; a plug-in's only with
    ``load``), and where a built-in's files are looked for."""
    from bench.datasets import NAMES, SPECS

    rows = []
    for name, spec in SPECS.items():
        facts = {"shape": list(spec.image_shape), "classes": spec.num_classes, "train_size": spec.train_size,
                 "test_size": spec.test_size}
        where = f"${spec.data_variable} or data_dir" if spec.data_variable else \
            "generated from the synthetic_* fields" if name == "synthetic" else "Debian's folder or data_dir"
        rows.append({"name": name, "source": "built-in", "facts": facts, "data": where})
    for name in dict.fromkeys([*sorted(components.entry_points("dataset")), *extra]):
        try:
            fn, plugin = components.load("dataset", name, builtin=NAMES)
            row = {"name": name, "source": plugin.describe(), "defaults": components.signature_defaults(fn, skip=1),
                   "data": "its load(data_dir)"}
            if load:
                arrays, _ = components.dataset(name, "", builtin=NAMES)
                row["facts"] = {"shape": list(arrays.image_shape), "classes": arrays.num_classes,
                                "train_size": len(arrays.train_labels), "test_size": len(arrays.test_labels)}
        except ConfigError as err:
            row = {"name": name, "source": _origin("dataset", name), "error": str(err)}
        rows.append(row)
    return rows


def _origin(kind: str, name: str) -> str:
    if components.is_reference(name):
        return f"{components.REFERENCE} {name}"
    eps = components.entry_points(kind).get(name, [])
    return f"{components.ENTRY_POINT} of " + ", ".join(" ".join(components._dist(ep)) for ep in eps) if eps else "?"


def listing(optimizers_=(), models_=(), datasets_=(), load: bool = False) -> dict:
    """Everything ``list`` prints, as one document (``--json``)."""
    import optimizers

    return {"optimizers": optimizer_rows(optimizers_), "models": model_rows(models_),
            "keras_arguments": list(optimizers.KERAS_ARGUMENTS),
            "datasets": dataset_rows(datasets_, load), "contracts": dict(components.CONTRACTS),
            "entry_point_groups": dict(components.GROUPS)}


def _print(doc: dict) -> None:
    keras_args = doc["keras_arguments"]
    for kind, title in (("optimizer", "optimizers"), ("model", "models"), ("dataset", "datasets")):
        print(f"{title} (plug-ins: entry points {components.GROUPS[kind]}, or \"package.module:attribute\"; "
              f"{components.CONTRACTS[kind]})")
        if kind == "optimizer":
            print(f"  every optimizer also takes Keras's own arguments: {', '.join(keras_args)}")
        for row in doc[title]:
            head = f"  {row['name']:<16} {row['source']}"
            if "error" in row:
                print(f"{head}\n      error: {row['error']}")
                continue
            if "role" in row:
                head += f"  [{row['role']}]"
            print(head)
            if "facts" in row:
                f = row["facts"]
                print(f"      {'x'.join(map(str, f['shape']))}, {f['classes']} classes, {f['train_size']} train / "
                      f"{f['test_size']} test images; data: {row['data']}")
            elif kind == "dataset":
                print(f"      facts read from its arrays (--data loads them); data: {row['data']}")
            if kind != "dataset" or row.get("defaults"):
                print(f"      defaults: {_defaults_text(row.get('defaults', {}))}"
                      + (f" ({row['defaults_from']})" if row.get("defaults_from") else ""))
            others = sorted(set(row.get("hyperparameters", [])) - set(row.get("defaults", {})) - set(keras_args))
            if others:
                print(f"      also: {', '.join(others)}")
            if kind == "optimizer":
                space = row.get("search_space") or {}
                dims = [f"{k} {spec['feasible_points']}" if "feasible_points" in spec else
                        f"{k} {spec['min']:g}..{spec['max']:g} {spec.get('scaling', 'linear')}"
                        for k, spec in space.items()]
                print("      search space ([search]): "
                      + ("; ".join(dims) or "none: a [search.space.NAME] table must give one"))
        print()


def add_arguments(p) -> None:
    """``python -m bench list``'s arguments."""
    p.add_argument("--optimizer", action="append", default=[], metavar="REF",
                   help="also describe this optimizer (a reference package.module:attribute, or any name)")
    p.add_argument("--model", action="append", default=[], metavar="REF", help="also describe this model")
    p.add_argument("--dataset", action="append", default=[], metavar="REF", help="also describe this data set")
    p.add_argument("--data", action="store_true", help="load plug-in data sets to show their facts")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")


def main(args) -> int:
    """``python -m bench list [--optimizer REF ...] [--model REF ...] [--dataset REF ...] [--data] [--json]``."""
    doc = listing(args.optimizer, args.model, args.dataset, load=args.data)
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        _print(doc)
    return 0
