"""Settings isolation: no test reads the developer's own settings file.

`concierge.config.load` reads ``$CONCIERGE_CONFIG`` or ``~/.config/concierge/config.toml``;
every test gets ``CONCIERGE_CONFIG`` unset and ``XDG_CONFIG_HOME`` pointed at an empty tmp dir,
so only what a test writes there is read. (conftest.py already points CONCIERGE_HOME at a tmp
dir and fixes the master key.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["_isolated_settings_file"]


@pytest.fixture(autouse=True)
def _isolated_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config_home = tmp_path / "xdg-config"
    config_home.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.delenv("CONCIERGE_CONFIG", raising=False)
    for name in ("CONCIERGE_API_URL", "CONCIERGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return config_home
