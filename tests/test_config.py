import pytest

from bench import config, datasets
from bench.config import ConfigError


def test_toml_and_overrides(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('optimizer = "momentum"\nglobal_batch = 512\n[hparams]\nmomentum = 0.8\n')
    cfg = config.load(f, ["optimizer=rmsprop", "epochs=3", "hparams.momentum=0.5", "decay_fractions=[0.5]"])
    assert (cfg.optimizer, cfg.global_batch, cfg.epochs, cfg.hparams) == ("rmsprop", 512, 3.0, {"momentum": 0.5})
    assert cfg.decay_fractions == (0.5,) and cfg.sweep == "run"


def test_run_id_depends_on_result_fields_only():
    a = config.make({"seed": 1})
    assert a.run_id(2) == config.make({"seed": 1, "sweep": "other", "output_dir": "/x"}).run_id(2)
    assert a.run_id(2) != config.make({"seed": 2}).run_id(2)
    assert a.run_id(1) != a.run_id(2)


@pytest.mark.parametrize(
    "values, words",
    [
        ({"epochz": 3}, ["epochz", "epochs"]),
        ({"epochs": "three"}, ["epochs", "'three'", "float"]),
        ({"global_batch": 12.5}, ["global_batch", "int"]),
        ({"augment": 1}, ["augment", "bool"]),
        ({"optimizer": "adamx"}, ["adamx", "momentum", "nlcg"[:0] + "rmsprop"]),
        ({"dataset": "mnist"}, ["mnist", "fashion_mnist", "cifar100"]),
        ({"model": "vgg"}, ["vgg", "resnet32"]),
        ({"hparams": {"betaz": 1}}, ["betaz", "momentum"]),
        ({"global_batch": 0}, ["global_batch", "> 0"]),
        ({"decay_fractions": [0.8, 0.5]}, ["decay_fractions", "increasing"]),
    ],
)
def test_bad_values_are_one_line_errors_naming_value_and_valid_choices(values, words):
    with pytest.raises(ConfigError) as e:
        config.make(values)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_override_syntax():
    assert config.parse_override("optimizer=nlcg-fr") == ("optimizer", "nlcg-fr")
    assert config.parse_override("epochs = 2.5") == ("epochs", 2.5)
    with pytest.raises(ConfigError, match="key=value"):
        config.parse_override("epochs")


def test_run_id_hashes_resolved_training_fields_only():
    base = config.make({"optimizer": "momentum", "seed": 1})
    # registry defaults written out, 1 and 1.0 alike: the same training, the same id
    assert base.run_id(2) == config.make({"optimizer": "momentum", "seed": 1, "hparams": {"momentum": 0.9}}).run_id(2)
    assert base.run_id(2) == config.make({"optimizer": "momentum", "seed": 1, "epochs": 3}).run_id(2)
    # evaluation cadence and batch, the target, logging and checkpoints change no training
    same = {"eval_every_epochs": 0.25, "eval_batch": 500, "target_top1": 0.8, "log_every_steps": 7,
            "checkpoint_every_epochs": 1.0}
    assert base.run_id(2) == config.make({"optimizer": "momentum", "seed": 1, **same}).run_id(2)
    # what is trained or how it is measured does
    for k, v in {"hparams": {"momentum": 0.8}, "bn_eval": "moving", "image_size": 16, "bn_momentum": 0.9}.items():
        assert base.run_id(2) != config.make({"optimizer": "momentum", "seed": 1, k: v}).run_id(2), k
    # config_id leaves out the seed only
    assert base.config_id(2) == config.make({"optimizer": "momentum", "seed": 7}).config_id(2)
    assert base.config_id(2) != base.config_id(1)


# ---- identity: what changes training, and nothing else ----------------------------------------------


def write_fashion_files(folder, n_train: int = 7, n_test: int = 3) -> None:
    """The four gzipped IDX files of Fashion-MNIST, in the real format (magic, dims, pixels), small."""
    import gzip
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        with gzip.open(folder / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + bytes(range(256)) * (n * 28 * 28 // 256)
                    + bytes(n * 28 * 28 % 256))
        with gzip.open(folder / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n)))


def _fashion(folder, **kw):
    return config.make({"dataset": "fashion_mnist", "data_dir": str(folder), **kw})


def test_moving_the_data_keeps_the_ids_and_other_files_change_them(tmp_path):
    import shutil

    write_fashion_files(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    a, b = _fashion(tmp_path / "a"), _fashion(tmp_path / "elsewhere" / "b")
    assert datasets.data_check("fashion_mnist", str(tmp_path / "a")) not in ("", datasets.ABSENT)
    assert (a.run_id(2), a.config_id(2)) == (b.run_id(2), b.config_id(2))
    # one file of another size (one more test image): other data, other ids
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    write_fashion_files(tmp_path / "c", n_test=4)
    c = _fashion(tmp_path / "c")
    assert c.run_id(2) != a.run_id(2) and c.config_id(2) != a.config_id(2)
    # no data there: a marker, not an exception (a dry run still lists the runs), and not the data's ids
    empty = _fashion(tmp_path / "empty")
    assert datasets.data_check("fashion_mnist", str(tmp_path / "empty")) == datasets.ABSENT
    assert empty.run_id(2) != a.run_id(2)
    # absence is not remembered: data put there later are seen by the same process
    write_fashion_files(tmp_path / "empty")
    assert empty.run_id(2) == a.run_id(2)


def test_the_folder_named_by_the_environment_is_the_same_data(tmp_path, monkeypatch):
    (tmp_path / "cifar-100-binary").mkdir()
    for name, n in (("train.bin", 3), ("test.bin", 2)):
        (tmp_path / "cifar-100-binary" / name).write_bytes(bytes(n * (2 + 3072)))
    given = config.make({"dataset": "cifar100", "data_dir": str(tmp_path)})
    monkeypatch.setenv("CIFAR_DIR", str(tmp_path / "cifar-100-binary"))
    assert config.make({"dataset": "cifar100"}).run_id(1) == given.run_id(1)
    monkeypatch.delenv("CIFAR_DIR")
    assert datasets.data_check("cifar100", "") == datasets.ABSENT


def test_the_data_check_lists_the_files_the_readers_read(tmp_path):
    """bench.datasets names the files without TensorFlow; the readers must read exactly those."""
    from bench import data

    write_fashion_files(tmp_path / "fashion")
    (tmp_path / "cifar-10-batches-bin").mkdir()
    for name in datasets.CIFAR_FILES["cifar10"][1]:
        (tmp_path / "cifar-10-batches-bin" / name).write_bytes(bytes(2 * 3073))
    for split, total in (("train", 3), ("validation", 2)):
        for i in range(total):
            (tmp_path / "imagenet" / f"{split}-{i:05d}-of-{total:05d}").parent.mkdir(exist_ok=True)
            (tmp_path / "imagenet" / f"{split}-{i:05d}-of-{total:05d}").write_bytes(b"x" * (i + 1))
    (tmp_path / "imagenet" / "README").write_text("not a shard")
    for name, folder in (("fashion_mnist", tmp_path / "fashion"), ("cifar10", tmp_path),
                         ("imagenet", tmp_path / "imagenet")):
        cfg = config.make({"dataset": name, "data_dir": str(folder)})
        files = {"fashion_mnist": data.fashion_mnist.files, "cifar10": data.READERS["cifar10"].files,
                 "imagenet": data.imagenet.files}[name]
        read = [*files(cfg, "train"), *files(cfg, "test")]
        assert sorted(map(str, read)) == sorted(map(str, datasets.data_files(name, str(folder)))), name
    assert datasets.data_folder("fashion_mnist", "") == data.FASHION_DIR


def test_eval_batch_changes_no_id_and_precise_bn_batch_changes_both():
    base = config.make({"per_worker_batch": 128, "seed": 3})
    assert base.run_id(1) == config.make({"per_worker_batch": 128, "seed": 3, "eval_batch": 64}).run_id(1)
    smaller = config.make({"per_worker_batch": 128, "seed": 3, "precise_bn_batch": 64})
    assert smaller.run_id(1) != base.run_id(1) and smaller.config_id(1) != base.config_id(1)
    # PreciseBN runs min(per_worker_batch, precise_bn_batch): values above per_worker_batch run alike
    assert config.make({"per_worker_batch": 128, "seed": 3, "precise_bn_batch": 500}).run_id(1) == base.run_id(1)
    # with the moving averages, PreciseBN does not run
    moving = config.make({"bn_eval": "moving", "seed": 3})
    assert moving.run_id(1) == config.make({"bn_eval": "moving", "seed": 3, "precise_bn_batch": 64}).run_id(1)
    with pytest.raises(ConfigError, match=r"^precise_bn_batch = 0 must be > 0$"):
        config.make({"precise_bn_batch": 0})


def test_fields_a_run_never_reads_are_not_in_its_id():
    def rid(**kw):
        return config.make(kw).run_id(1)

    for k, v in {"width": 8, "bn_momentum": 0.9}.items():
        assert rid(model="resnet50", **{k: v}) == rid(model="resnet50"), k
        assert rid(model="resnet8", **{k: v}) != rid(model="resnet8"), k
    assert rid(synthetic_classes=5) == rid()  # fashion_mnist: the synthetic_* fields are not its data
    assert rid(dataset="synthetic", synthetic_classes=5) != rid(dataset="synthetic")
    assert rid(image_size=28) == rid() != rid(image_size=14)  # the native side resamples nothing
    assert rid(ema_decay=0.99) == rid() and rid(eval_ema=True, ema_decay=0.99) != rid(eval_ema=True)


def test_an_old_rows_config_gets_the_ids_of_the_same_run_today():
    """A row's config JSON written before precise_bn_batch existed: its eval_batch was PreciseBN's batch."""
    now = config.make({"per_worker_batch": 512, "precise_bn_batch": 256, "seed": 1})
    old = {k: v for k, v in now.to_dict().items() if k != "precise_bn_batch"} | {"eval_batch": 256,
                                                                                 "removed_field": 1}
    fields = config.identity(old, 1, hparams=now.resolved_hparams())
    assert config.hash_fields(fields) == now.run_id(1) and config.config_hash(fields) == now.config_id(1)
