"""Settings from YAML and flags: one parser for both, clear errors for bad values."""

import argparse
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from crossmae.errors import CrossMAEError
from crossmae.train.options import (
    DashesFormatter,
    add_dataclass_arguments,
    build_dataclass,
    coerce,
    read_yaml,
    setting,
)


@dataclass
class Settings:
    epochs: int = setting(10, "how long")
    blr: float = setting(1.5e-4, "base lr")
    clip_grad: float | None = setting(None, "clip")
    compile: bool = setting(False, "compile")
    in_memory: bool | None = setting(None, "auto")
    betas: list[float] = setting([0.9, 0.95], "betas")  # noqa: RUF009
    precision: Literal["bf16", "fp32"] = setting("fp32", "precision")
    overrides: dict[str, Any] = setting({}, "model fields")  # noqa: RUF009


def parse(argv):
    parser = argparse.ArgumentParser(formatter_class=DashesFormatter)
    add_dataclass_arguments(parser, Settings)
    return vars(parser.parse_args(argv))


def test_flags_with_dashes_or_underscores_and_yaml_spellings():
    flags = parse(["--clip-grad", "1e-1", "--in_memory", "auto", "--compile", "--betas", "0.8,0.9",
                   "--overrides", "depth=2", "fusion_layers=[0, 1]", "name=x"])  # fmt: skip
    cfg = build_dataclass(Settings, {"epochs": "3", "blr": "1e-3"}, flags)
    assert cfg.epochs == 3 and cfg.blr == 1e-3 and cfg.clip_grad == 0.1
    assert cfg.in_memory is None and cfg.compile is True and cfg.betas == [0.8, 0.9]
    assert cfg.overrides == {"depth": 2, "fusion_layers": [0, 1], "name": "x"}


def test_only_given_flags_override_the_file():
    flags = parse(["--no-compile"])
    assert flags == {"compile": False}
    cfg = build_dataclass(Settings, {"compile": True, "epochs": 7}, flags)
    assert cfg.compile is False and cfg.epochs == 7


def test_defaults_are_not_shared_between_instances():
    a, b = Settings(), Settings()
    a.betas.append(1.0)
    assert b.betas == [0.9, 0.95]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("epochs", "ten", "--epochs is not a valid N, got 'ten'"),
        ("epochs", 2.5, "--epochs must be a whole number"),
        ("epochs", "1.5e0", "--epochs must be a whole number"),  # was cut to 1
        ("compile", "maybe", "--compile must be true or false"),
        ("precision", "fp8", "--precision must be one of bf16, fp32"),
        ("epochs", None, "--epochs needs a value"),
        ("overrides", ["depth"], "--overrides must be KEY=VALUE pairs"),
        ("overrides", {1: 2}, "--overrides must have names as keys, not 1"),
        ("output_dir", ["runs", "r02"], "--output-dir must be text"),
        ("epochs", "nan", "--epochs is not a valid N"),
    ],
)
def test_bad_values_name_the_setting(name, value, message):
    hints = {"epochs": int, "compile": bool, "precision": Literal["bf16", "fp32"],
             "overrides": dict[str, Any], "output_dir": str | None}  # fmt: skip
    with pytest.raises(CrossMAEError, match=message.replace("[", r"\[")):
        coerce(name, value, hints[name])


def test_switches_take_a_value_or_none():
    def settings(*argv):
        cfg = build_dataclass(Settings, parse(list(argv)))
        return cfg.compile, cfg.in_memory

    assert settings("--compile") == (True, None) and settings("--compile", "false") == (False, None)
    assert settings("--in-memory") == (False, True)
    assert settings("--in-memory", "auto") == (False, None)
    with pytest.raises(SystemExit):
        parse(["--no-compile", "true"])


def test_repeated_dict_flags_add_up():
    flags = parse(["--overrides", "depth=3", "--overrides", "decoder_depth=1"])
    assert build_dataclass(Settings, flags).overrides == {"depth": 3, "decoder_depth": 1}


def test_floats_must_be_finite():
    for text in ("nan", "inf", "-inf"):
        with pytest.raises(CrossMAEError, match="--blr must be a finite number"):
            coerce("blr", text, float)


def test_whole_numbers_in_e_notation_are_read():
    assert coerce("samples_per_epoch", "1.28e6", int) == 1_280_000
    assert coerce("epochs", "2E1", int) == 20


def test_unknown_yaml_key_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nepochz: 4\n")
    with pytest.raises(CrossMAEError, match=r"unknown setting 'epochz' in .*run\.yaml"):
        build_dataclass(Settings, read_yaml(path), source=str(path))


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(CrossMAEError, match="must hold a mapping"):
        read_yaml(path)
    with pytest.raises(CrossMAEError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    path.write_text("1: 2\n")
    with pytest.raises(CrossMAEError, match="has a setting named 1, not a name"):
        read_yaml(path)
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(CrossMAEError, match="cannot be read as UTF-8 text"):
        read_yaml(path)


def test_help_shows_each_flag_once_with_its_default():
    parser = argparse.ArgumentParser(formatter_class=DashesFormatter)
    add_dataclass_arguments(parser, Settings)
    text = parser.format_help()
    assert "--clip-grad X" in text and "--clip_grad" not in text
    assert "(default: 0.9,0.95)" in text and "--compile [{true,false}], --no-compile" in text
