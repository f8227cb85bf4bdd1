import pytest

from bench import config
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
        ({"optimizer": "adamw"}, ["adamw", "momentum", "nlcg"[:0] + "rmsprop"]),
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
