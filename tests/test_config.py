"""YAML config -> frozen typed objects: unknown keys, types, overrides, registry, hashing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from rankstream.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    TrainConfig,
    load_config,
)
from rankstream.models.sasrec import SASRecConfig
from rankstream.registry import MODELS, RegistryError

BASE = {
    "name": "tiny",
    "dataset": "toy",
    "model": {"name": "sasrec", "dim": 16, "num_blocks": 1, "max_len": 20},
    "data": {"loader": "seq_text", "path": "toy.txt", "min_user_count": 2},
    "train": {"max_epochs": 7, "lr": 0.002, "loss": "full_softmax"},
    "eval": {"ks": [10, 20], "mask_history": True},
}


def write(tmp_path: Path, raw: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def test_loads_typed_frozen_objects(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name == "tiny" and cfg.dataset == "toy" and cfg.model_name == "sasrec"
    assert isinstance(cfg.model, SASRecConfig)
    assert (cfg.model.dim, cfg.model.num_blocks, cfg.model.max_len) == (16, 1, 20)
    assert cfg.model.num_heads == SASRecConfig().num_heads  # default kept
    assert isinstance(cfg.data, DataConfig) and cfg.data.path == "toy.txt"
    assert cfg.data.min_user_count == 2
    assert isinstance(cfg.train, TrainConfig)
    assert cfg.train.max_epochs == 7 and cfg.train.loss == "full_softmax"
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(0.002)
    assert isinstance(cfg.eval, EvalConfig)
    assert cfg.eval.ks == (10, 20) and isinstance(cfg.eval.ks, tuple)
    assert cfg.eval.mask_history is True
    for obj in (cfg, cfg.model, cfg.data, cfg.train, cfg.eval):
        assert dataclasses.is_dataclass(obj)
        assert type(obj).__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_int_accepted_for_float_field(tmp_path: Path) -> None:
    raw = {**BASE, "train": {"lr": 1}}
    cfg = load_config(write(tmp_path, raw))
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0


def test_name_and_dataset_default_to_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mydata"
    folder.mkdir()
    raw = {"model": {"name": "sasrec"}}
    cfg = load_config(write(folder, raw, "exp1.yaml"))
    assert cfg.name == "exp1" and cfg.dataset == "mydata"
    assert cfg.train == TrainConfig() and cfg.data == DataConfig() and cfg.eval == EvalConfig()


@pytest.mark.parametrize(
    ("raw_patch", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"train": {"foo": 1}}, "train.foo"),
        ({"model": {"name": "sasrec", "foo": 1}}, "model.foo"),
        ({"data": {"pathh": "x"}}, "data.pathh"),
        ({"eval": {"k": [1]}}, "eval.k"),
    ],
)
def test_unknown_key_names_dotted_key(tmp_path: Path, raw_patch: dict, key: str) -> None:
    raw = {**BASE, **raw_patch}
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(write(tmp_path, raw))


def test_unknown_key_via_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'train.foo'"):
        load_config(write(tmp_path, BASE), ["train.foo=1"])
    with pytest.raises(ConfigError, match="'model.foo'"):
        load_config(write(tmp_path, BASE), ["model.foo=1"])


def test_model_keys_of_another_model_rejected(tmp_path: Path) -> None:
    # dqk belongs to HSTU, not SASRec: a model takes only its own config
    raw = {**BASE, "model": {"name": "sasrec", "dqk": 8}}
    with pytest.raises(ConfigError, match="'model.dqk'"):
        load_config(write(tmp_path, raw))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.max_epochs=abc", "train.max_epochs"),
        ("train.max_epochs=1.5", "train.max_epochs"),
        ("train.max_epochs=true", "train.max_epochs"),
        ("train.lr=fast", "train.lr"),
        ("train.resume=1", "train.resume"),
        ("train.loss=bce", "train.loss"),
        ("eval.ks=10", "eval.ks"),
        ("eval.ks=[10,x]", "eval.ks[1]"),
        ("data.path=3", "data.path"),
        ("data.on_bad_rows=ignore", "data.on_bad_rows"),
        ("model.dim=big", "model.dim"),
    ],
)
def test_wrong_types_raise(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, BASE), [override])


def test_optional_float(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), ["data.min_rating=4"])
    assert cfg.data.min_rating == 4.0 and isinstance(cfg.data.min_rating, float)
    cfg = load_config(write(tmp_path, BASE), ["data.min_rating=null"])
    assert cfg.data.min_rating is None
    with pytest.raises(ConfigError, match="data.min_rating"):
        load_config(write(tmp_path, BASE), ["data.min_rating=high"])


def test_dotted_overrides_apply(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, BASE),
        ["train.max_epochs=3", "eval.ks=[5,10]", "data.path=x.txt", "model.dim=8", "train.lr=0.5"],
    )
    assert cfg.train.max_epochs == 3
    assert cfg.eval.ks == (5, 10)
    assert cfg.data.path == "x.txt"
    assert cfg.model.dim == 8
    assert cfg.train.lr == 0.5
    # untouched values stay
    assert cfg.train.loss == "full_softmax" and cfg.data.min_user_count == 2


def test_override_creates_missing_section_and_last_wins(tmp_path: Path) -> None:
    raw = {"model": {"name": "sasrec"}}
    cfg = load_config(write(tmp_path, raw), ["train.max_epochs=4", "train.max_epochs=5"])
    assert cfg.train.max_epochs == 5


def test_override_without_equals_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(write(tmp_path, BASE), ["train.max_epochs"])


def test_override_into_non_section_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, BASE), ["name.sub=1"])


def test_model_name_override_switches_config_class(tmp_path: Path) -> None:
    raw = {**BASE, "model": {"name": "sasrec"}}
    cfg = load_config(write(tmp_path, raw), ["model.name=hstu", "model.dqk=8"])
    assert cfg.model_name == "hstu" and cfg.model.dqk == 8


def test_unknown_model_lists_known(tmp_path: Path) -> None:
    raw = {**BASE, "model": {"name": "nope"}}
    with pytest.raises(RegistryError) as ei:
        load_config(write(tmp_path, raw))
    msg = str(ei.value)
    assert "nope" in msg
    for name in MODELS.names():
        assert name in msg
    assert "sasrec" in msg and "hstu" in msg


def test_missing_model_name_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.name"):
        load_config(write(tmp_path, {"model": {"dim": 3}}))


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.max_epochs = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.dim = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.path = "y"  # type: ignore[misc]


def test_hash_stable_and_sensitive(tmp_path: Path) -> None:
    p = write(tmp_path, BASE)
    h1 = load_config(p).hash()
    h2 = load_config(p).hash()
    assert h1 == h2 and len(h1) == 12
    # the same config written with keys in another order hashes the same
    reordered = {k: BASE[k] for k in reversed(list(BASE))}
    assert load_config(write(tmp_path, reordered, "other.yaml")).hash() == h1
    # a default spelled out explicitly does not change the hash
    assert load_config(p, [f"train.seed={TrainConfig().seed}"]).hash() == h1
    assert load_config(p, ["train.max_epochs=3"]).hash() != h1
    assert load_config(p, ["model.dim=8"]).hash() != h1
    assert load_config(p, ["eval.ks=[5,10]"]).hash() != h1
    # a section subset ignores changes elsewhere
    assert (
        load_config(p, ["train.max_epochs=3"]).hash(("model",)) == load_config(p).hash(("model",))
    )


def test_to_dict_round_trip(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    d = cfg.to_dict()
    assert d["model"]["name"] == "sasrec" and d["model"]["dim"] == 16
    assert "model_name" not in d
    # the dict form is a valid config again and loads to the same object
    d["eval"]["ks"] = list(d["eval"]["ks"])
    again = load_config(write(tmp_path, d, "again.yaml"))
    assert again == cfg


# -- regressions: bugs found by these tests, now fixed ------------------------------------


def test_exponent_float_without_dot(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), ["train.lr=1e-3"])
    assert cfg.train.lr == pytest.approx(1e-3)
    p = tmp_path / "exp.yaml"
    p.write_text("model:\n  name: sasrec\ntrain:\n  lr: 4e-3\n")
    assert load_config(p).train.lr == pytest.approx(4e-3)


def test_date_like_value(tmp_path: Path) -> None:
    p = tmp_path / "dated.yaml"
    p.write_text("name: 2024-05-01\nmodel:\n  name: sasrec\n")
    try:
        cfg = load_config(p)
    except ConfigError:
        return  # a one-line config error is fine too
    assert cfg.name == "2024-05-01"


def test_early_stop_metric_must_be_a_computed_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rankstream.train import sequential

    monkeypatch.setenv("RANKSTREAM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "toy.txt").write_text("1 1 2 3 4\n2 2 3 4 5\n3 1 3 5 2\n")
    overrides = ["eval.ks=[5,20]", "data.path=toy.txt", "data.max_len=10", "model.max_len=10"]
    with pytest.raises(ConfigError, match="early_stop_metric"):
        cfg = load_config(write(tmp_path, BASE), overrides)
        sequential.build(cfg, tmp_path)


def test_cli_overrides_may_follow_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from rankstream import cli

    seen: dict[str, list[str]] = {}
    monkeypatch.setattr(cli, "cmd_bench", lambda a: seen.setdefault("o", a.overrides) and 0)
    argv = ["bench", "--config", "c.yaml", "a.b=1", "--out", "o.json", "c.d=2", "e=3"]
    assert cli.main(argv) == 0
    assert seen["o"] == ["a.b=1", "c.d=2", "e=3"]
    with pytest.raises(SystemExit):  # an unknown option is still an error
        cli.main(["bench", "--config", "c.yaml", "--out", "o.json", "--nosuch"])
