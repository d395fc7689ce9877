"""One frozen settings object: flag, then environment, then the settings file, then the default;
credentials never from the file; only concierge/config.py reads the environment."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import platformdirs
import pytest

import concierge
from concierge import config
from concierge.errors import ConfigError

ROOT = Path(concierge.__file__).resolve().parent.parent


def _file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return {"CONCIERGE_CONFIG": str(path)}


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(tmp_path: Path):
    env = _file(tmp_path, 'api_url = "http://from-file"\nmodel = "file-model"\nhome = "~/from-file"\n')
    assert config.load(environ=env).api_url == "http://from-file"
    assert config.load(environ=env | {"CONCIERGE_API_URL": "http://from-env"}).api_url == "http://from-env"
    flagged = config.load({"api_url": "http://from-flag"}, environ=env | {"CONCIERGE_API_URL": "http://from-env"})
    assert flagged.api_url == "http://from-flag"
    assert config.load({"api_url": None}, environ=env).api_url == "http://from-file"  # a flag not given
    settings = config.load(environ=env)
    assert settings.model == "file-model" and settings.home == Path("~/from-file").expanduser()
    assert settings.config_file == tmp_path / "settings.toml"
    defaults = config.load(environ={})  # (the default settings file is isolated: settings_fixtures)
    assert defaults.api_url is None and defaults.model is None and defaults.config_file is None
    assert defaults.home == Path(platformdirs.user_data_dir("concierge"))


def test_settings_are_frozen_and_never_show_a_credential():
    settings = config.load(environ={"CONCIERGE_MASTER_KEY": "00" * 32, "OPENAI_API_KEY": "sk-test-123",
                                    "CONCIERGE_API_KEY": "ck_test_123", "CONCIERGE_HOME": "/tmp/h"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.home = Path("/elsewhere")  # type: ignore[misc]
    shown = repr(settings)
    assert "sk-test-123" not in shown and "ck_test_123" not in shown and "00" * 32 not in shown
    assert settings.openai_api_key == "sk-test-123"


@pytest.mark.parametrize(("text", "message"), [
    ('master_key = "00"', "may not hold 'master_key', a credential: set CONCIERGE_MASTER_KEY"),
    ('openai_api_key = "sk-x"', "set OPENAI_API_KEY in the environment"),
    ('colour = "no"', "unknown setting 'colour'"),
    ("api_url = [1]", "api_url in"),
    ("api_url = ", "is not valid TOML"),
])
def test_a_bad_settings_file_is_refused_naming_the_file_and_the_setting(tmp_path: Path, text: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        config.load(environ=_file(tmp_path, text))
    assert str(tmp_path / "settings.toml") in caught.value.detail


def test_a_missing_settings_file_named_explicitly_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="CONCIERGE_CONFIG names .* which does not exist"):
        config.load(environ={"CONCIERGE_CONFIG": str(tmp_path / "nope.toml")})


def test_the_cli_reports_a_bad_settings_file_and_exits_1(tmp_path: Path):
    from tests.cli_fixtures import run_cli

    res = run_cli("sandbox", "list", env=_file(tmp_path, 'colour = "no"'))
    assert res.returncode == 1 and "unknown setting 'colour'" in res.stderr


def test_only_the_config_module_reads_the_environment():
    readers = []
    for path in sorted((ROOT / "concierge").rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "concierge":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"os\.environ|os\.getenv|getenv\(", text):
            readers.append(str(path.relative_to(ROOT)))
    assert readers == []


def test_the_readme_configuration_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for setting in config.SETTINGS:
        assert f"`{setting.env}`" in section, setting.env
        if setting.flag:
            assert f"`{setting.flag}`" in section, setting.flag
    assert f"`{config.CONFIG_ENV}`" in section
    assert "CONCIERGE_DATA_DIR" not in readme
