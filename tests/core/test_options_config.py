"""Benchmark options (build_settings) and the TOML config file (load_config)."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from backends.core.config import Config, ConfigError, default_config_path, load_config
from backends.core.options import BENCH_OPTIONS, build_settings
from backends.core.records import JobSettings

# -- build_settings ---------------------------------------------------------------------------


def test_no_values_give_the_defaults() -> None:
    assert build_settings({}) == JobSettings()
    assert build_settings({option.field: None for option in BENCH_OPTIONS}) == JobSettings()


def test_values_override_defaults_without_mutating_them() -> None:
    defaults = JobSettings(warmup=3, runs=50, threads=2)

    settings = build_settings({"runs": 10, "rounds": 5, "per_layer": True}, defaults)

    assert settings == JobSettings(warmup=3, runs=10, threads=2, rounds=5, per_layer=True)
    assert defaults == JobSettings(warmup=3, runs=50, threads=2)
    # None means "not given" and keeps the default; an explicit value, False too, wins
    assert build_settings({"per_layer": None}, JobSettings(per_layer=True)).per_layer is True
    assert build_settings({"per_layer": False}, JobSettings(per_layer=True)).per_layer is False


def test_runs_and_min_seconds_together_are_rejected() -> None:
    with pytest.raises(ValueError, match="--runs") as raised:
        build_settings({"runs": 10, "min_seconds": 1.0})
    assert "--min-seconds" in str(raised.value)


def test_min_seconds_replaces_runs() -> None:
    settings = build_settings({"min_seconds": 0.5}, JobSettings(runs=200))

    assert settings.min_seconds == 0.5
    assert settings.runs is None


def test_runs_replaces_min_seconds_from_the_defaults() -> None:
    defaults = build_settings({"min_seconds": 2.0})

    settings = build_settings({"runs": 10}, defaults)

    assert settings.runs == 10
    assert settings.min_seconds is None


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("warmup", -1, "--warmup"),
        ("runs", 0, "--runs"),
        ("min_seconds", 0.0001, "--min-seconds"),
        ("threads", 0, "--threads"),
        ("rounds", 0, "--rounds"),
    ],
)
def test_values_below_the_minimum_are_rejected_with_the_flag(
    field: str, value: float, flag: str
) -> None:
    with pytest.raises(ValueError, match=flag):
        build_settings({field: value})


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("runs", 2.5, "--runs"),
        ("runs", True, "--runs"),
        ("warmup", "3", "--warmup"),
        ("min_seconds", "1", "--min-seconds"),
        ("per_layer", "no", "--per-layer"),
        ("per_layer", 1, "--per-layer"),
    ],
)
def test_values_of_the_wrong_type_are_rejected_with_the_flag(
    field: str, value: object, flag: str
) -> None:
    with pytest.raises(ValueError, match=flag):
        build_settings({field: value})


def test_min_seconds_accepts_an_int() -> None:
    settings = build_settings({"min_seconds": 2})
    assert settings.min_seconds == 2.0
    assert isinstance(settings.min_seconds, float)


@pytest.mark.parametrize(
    ("field", "value"),
    [("warmup", 0), ("runs", 1), ("min_seconds", 0.001), ("threads", 1), ("rounds", 1)],
)
def test_minimum_values_are_accepted(field: str, value: float) -> None:
    assert getattr(build_settings({field: value}), field) == value


# -- load_config ------------------------------------------------------------------------------


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user config dir at an empty folder in tmp_path."""
    home = tmp_path / "config-home"
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda app: str(home / app))
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_default_path_is_in_the_user_config_dir(config_home: Path) -> None:
    assert default_config_path() == config_home / "devlab" / "config.toml"


def test_missing_default_file_gives_defaults(config_home: Path) -> None:
    config = load_config(None)

    assert not default_config_path().exists()
    assert config == Config()
    assert config.path is None
    assert config.defaults == JobSettings()
    assert config.aliases == {}
    assert config.resolve_device("host:cpu") == "host:cpu"


def test_default_file_is_read_when_present(config_home: Path) -> None:
    path = write(default_config_path(), "[defaults]\nwarmup = 4\n")

    config = load_config()

    assert config.path == path
    assert config.defaults.warmup == 4


def test_named_missing_file_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "devlab.toml"

    with pytest.raises(ConfigError, match="does not exist") as raised:
        load_config(missing)
    assert str(missing) in str(raised.value)


def test_defaults_and_aliases_are_applied(tmp_path: Path) -> None:
    path = write(
        tmp_path / "devlab.toml",
        '[defaults]\nruns = 7\nper_layer = true\n\n[aliases]\np = "adb:X"\n',
    )

    config = load_config(path)

    assert config.path == path
    assert config.defaults == JobSettings(runs=7, per_layer=True)
    assert config.aliases == {"p": "adb:X"}
    assert config.resolve_device("p") == "adb:X"
    assert config.resolve_device("adb:Y") == "adb:Y"
    assert config.raw["aliases"] == {"p": "adb:X"}
    # the config defaults are what the command-line values build on
    assert build_settings({"warmup": 2}, config.defaults) == JobSettings(
        warmup=2, runs=7, per_layer=True
    )


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "[defaults\nruns = 7\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[defaults]\nruns = 0\n", ["--runs", "[defaults]"]),
        ("[defaults]\nruns = 5\nmin_seconds = 1.0\n", ["--runs", "--min-seconds"]),
        ('[defaults]\nruns = "many"\n', ["[defaults]", "--runs"]),
        ('[defaults]\nper_layer = "no"\n', ["[defaults]", "--per-layer"]),
        ("[aliases]\np = 3\n", ["[aliases]"]),
    ],
)
def test_bad_values_raise_config_error_naming_the_file(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    path = write(tmp_path / "bad.toml", text)

    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_defaults_that_are_not_a_table_raise_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "flat.toml", "defaults = 5\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_cli_keeps_per_layer_from_the_config_file(tmp_path: Path) -> None:
    from console.cli.main import build_parser
    from console.cli.run import job_settings

    config = load_config(write(tmp_path / "devlab.toml", "[defaults]\nper_layer = true\n"))
    assert config.defaults.per_layer is True
    args = build_parser().parse_args(["--run", "model.onnx"])

    assert job_settings(args, config).per_layer is True


def test_unknown_default_setting_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.toml", "[defaults]\nrun = 7\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "run" in str(caught.value)
    assert "runs" in str(caught.value)  # the known names, so the typo is easy to fix
