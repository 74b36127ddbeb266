"""The credentials package loads its exec-plugin and token modules only when they are used."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

PLUGIN_MODULES = (
    "pullwarden.credentials._plugins",
    "pullwarden.credentials._provider_config",
    "pullwarden.credentials._tokens",
)


def loaded_after(statement: str) -> list[str]:
    probe = (
        "import sys\n"
        f"{statement}\n"
        f"print(sorted(m for m in sys.modules if m.startswith({PLUGIN_MODULES!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return list(ast.literal_eval(done.stdout))


@pytest.mark.parametrize(
    "statement",
    [
        "import pullwarden.credentials",
        "import pullwarden.imagemanager",
        "from pullwarden.node import Node",
    ],
)
def test_importing_without_plugins_loads_no_plugin_module(statement: str) -> None:
    assert loaded_after(statement) == []


def test_the_lazy_names_load_their_module_on_use() -> None:
    loaded = loaded_after(
        "from pullwarden.credentials import CredentialPlugins, TokenIssuer\n"
        "assert CredentialPlugins.__module__ == 'pullwarden.credentials._plugins'\n"
        "assert TokenIssuer.__module__ == 'pullwarden.credentials._tokens'"
    )
    assert "pullwarden.credentials._plugins" in loaded
    assert "pullwarden.credentials._tokens" in loaded


def test_an_unknown_name_is_an_attribute_error() -> None:
    import pullwarden.credentials as credentials

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = credentials.NoSuchThing
