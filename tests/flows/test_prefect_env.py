"""`prefect.env`: the settings `make` and people share, so `prefect ...` reaches the project's server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _settings_after_sourcing(cwd: Path, **pmg: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PMG_"))}
    env["HOME"] = str(cwd)  # a ~/.prefect would land here
    env.update({f"PMG_{name.upper()}": value for name, value in pmg.items()})
    probe = (
        "from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, Settings;"
        "print(PREFECT_HOME.value()); print(PREFECT_API_URL.value()); print(PREFECT_LOCAL_STORAGE_PATH.value())"
        "; s = Settings(); print(s.server.ui.api_url);"
        "print([a and a.get_secret_value() for a in (s.server.api.auth_string, s.api.auth_string)])"
    )
    done = subprocess.run(
        ["bash", "-c", f'set -a; . "{ROOT / "prefect.env"}"; set +a; "{sys.executable}" -c "{probe}"'],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    home, api, storage, ui_api, auth = done.stdout.strip().splitlines()[-5:]
    return {"home": home, "api": api, "storage": storage, "ui_api": ui_api, "auth": auth}


def test_prefect_env_points_at_the_project_server_and_keeps_state_in_the_checkout(tmp_path: Path) -> None:
    # Read from another folder: the paths still name this checkout (not the cwd, not ~).
    found = _settings_after_sourcing(tmp_path)
    assert found == {
        "home": str(ROOT / ".prefect"),
        "api": "http://127.0.0.1:4200/api",
        "storage": str(ROOT / ".prefect" / "results"),
        "ui_api": "http://127.0.0.1:4200/api",
        "auth": "[None, None]",  # unset, not empty: an empty string would lock every client out
    }
    assert _settings_after_sourcing(tmp_path, prefect_port="4300")["api"] == "http://127.0.0.1:4300/api"
    remote = _settings_after_sourcing(tmp_path, prefect_api_url="http://10.0.0.5:4200/api")
    assert remote["api"] == "http://10.0.0.5:4200/api"
    assert not (tmp_path / ".prefect").exists()


def test_prefect_env_gives_the_one_auth_string_to_the_server_and_the_clients(tmp_path: Path) -> None:
    """`PMG_PREFECT_AUTH_STRING` is what the server checks and clients send; the dashboard's may differ."""
    found = _settings_after_sourcing(
        tmp_path,
        prefect_api_url="https://prefect.example.org/api",
        prefect_auth_string="pmg-admin:s3cret",
        prefect_ui_api_url="https://dashboard.example.org/api",
    )
    assert found["auth"] == "['pmg-admin:s3cret', 'pmg-admin:s3cret']"
    assert found["api"] == "https://prefect.example.org/api"
    assert found["ui_api"] == "https://dashboard.example.org/api"
    assert _settings_after_sourcing(tmp_path, prefect_auth_string="")["auth"] == "[None, None]"


def test_the_makefiles_prefect_targets_read_prefect_env() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "PREFECT_ENV := export PMG_PREFECT_PORT=$(PREFECT_PORT) && set -a && . $(CURDIR)/prefect.env" in makefile
    for target, command in (
        ("prefect-server", "python -m flows.launch server --host $(PREFECT_HOST) "),
        ("prefect-deploy", "python -m flows.deploy all "),
        ("worker", "python -m flows.launch worker --pool pmg --type process "),
    ):
        recipe = re.search(rf"^{target}:.*\n\t(.*)", makefile, re.MULTILINE)
        assert recipe is not None and recipe.group(1).startswith("$(PREFECT_ENV) "), target
        # The server and the workers start through flows.launch, which refuses an open API.
        assert recipe.group(1).startswith(f"$(PREFECT_ENV) $(BIN)/{command}"), target
    assert "PREFECT_HOST ?= 127.0.0.1" in makefile
    # And everything else keeps Prefect's state in the checkout too.
    assert "export PREFECT_HOME := $(CURDIR)/.prefect" in makefile
