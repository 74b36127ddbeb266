"""Node docker config files: search order and the five-minute cache (spec §2.4a)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pullwarden.credentials import (
    AuthEntry,
    DockerKeyring,
    NodeDockerConfigProvider,
    UnionKeyring,
)
from pullwarden.credentials._providers import ProviderKeyring


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dirs:
    def __init__(self, base: Path) -> None:
        self.preferred = base / "kubelet"
        self.work = base / "work"
        self.home = base / "home"
        self.root = base / "root"
        for d in (self.preferred, self.work, self.home / ".docker", self.root / ".docker"):
            d.mkdir(parents=True)

    def provider(self, clock: FakeClock | None = None) -> NodeDockerConfigProvider:
        return NodeDockerConfigProvider(
            self.preferred,
            work_dir=self.work,
            home=self.home,
            root=self.root,
            clock=clock or FakeClock(),
        )


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return Dirs(tmp_path)


def write_config_json(path: Path, username: str) -> None:
    path.write_text(json.dumps({"auths": {"r.io": {"username": username, "password": "p"}}}))


def write_dockercfg(path: Path, username: str) -> None:
    path.write_text(json.dumps({"r.io": {"username": username, "password": "p"}}))


def test_search_paths(dirs: Dirs) -> None:
    config_json, dockercfg = dirs.provider().search_paths()
    assert config_json == (
        dirs.preferred / "config.json",
        dirs.work / "config.json",
        dirs.home / ".docker" / "config.json",
        dirs.root / ".docker" / "config.json",
    )
    assert dockercfg == (
        dirs.preferred / ".dockercfg",
        dirs.work / ".dockercfg",
        dirs.home / ".dockercfg",
        dirs.root / ".dockercfg",
    )


def test_default_paths() -> None:
    provider = NodeDockerConfigProvider(Path("/var/lib/kubelet"), home=Path("/home/k"))
    config_json, dockercfg = provider.search_paths()
    assert config_json[0] == Path("/var/lib/kubelet/config.json")
    assert config_json[1] == Path("config.json")  # relative to the working directory
    assert config_json[2:] == (Path("/home/k/.docker/config.json"), Path("/.docker/config.json"))
    assert dockercfg[2:] == (Path("/home/k/.dockercfg"), Path("/.dockercfg"))


def test_home_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/from-env")
    provider = NodeDockerConfigProvider(Path("/k"))
    assert provider.search_paths()[0][2] == Path("/home/from-env/.docker/config.json")


@pytest.mark.parametrize("winner", ["preferred", "work", "home", "root"])
def test_config_json_search_order(dirs: Dirs, winner: str) -> None:
    locations = {
        "preferred": dirs.preferred / "config.json",
        "work": dirs.work / "config.json",
        "home": dirs.home / ".docker" / "config.json",
        "root": dirs.root / ".docker" / "config.json",
    }
    order = list(locations)
    for name in order[order.index(winner) :]:
        write_config_json(locations[name], name)
    # a .dockercfg is never consulted while a config.json is found
    write_dockercfg(dirs.preferred / ".dockercfg", "legacy")
    assert dict(dirs.provider().config()) == {"r.io": AuthEntry(winner, "p")}


@pytest.mark.parametrize("winner", ["preferred", "work", "home", "root"])
def test_dockercfg_search_order(dirs: Dirs, winner: str) -> None:
    locations = {
        "preferred": dirs.preferred / ".dockercfg",
        "work": dirs.work / ".dockercfg",
        "home": dirs.home / ".dockercfg",
        "root": dirs.root / ".dockercfg",
    }
    order = list(locations)
    for name in order[order.index(winner) :]:
        write_dockercfg(locations[name], name)
    assert dict(dirs.provider().config()) == {"r.io": AuthEntry(winner, "p")}


def test_unparsable_and_unreadable_files_are_skipped(
    dirs: Dirs, caplog: pytest.LogCaptureFixture
) -> None:
    (dirs.preferred / "config.json").write_text('{"auths":{"r.io":{"auth":"sup3rsecret!"}}}')
    (dirs.work / "config.json").mkdir()  # a directory cannot be read as a file
    (dirs.home / ".docker" / "config.json").write_text("[]")
    write_config_json(dirs.root / ".docker" / "config.json", "root")
    with caplog.at_level(logging.DEBUG):
        assert dict(dirs.provider().config()) == {"r.io": AuthEntry("root", "p")}
    assert "sup3rsecret" not in caplog.text


def test_bad_config_json_everywhere_falls_back_to_dockercfg(dirs: Dirs) -> None:
    (dirs.preferred / "config.json").write_text("{")
    write_dockercfg(dirs.home / ".dockercfg", "legacy")
    assert dict(dirs.provider().config()) == {"r.io": AuthEntry("legacy", "p")}


def test_an_empty_but_valid_config_json_wins(dirs: Dirs) -> None:
    (dirs.work / "config.json").write_text("{}")
    write_config_json(dirs.home / ".docker" / "config.json", "home")
    write_dockercfg(dirs.preferred / ".dockercfg", "legacy")
    assert dict(dirs.provider().config()) == {}


def test_nothing_found_is_an_empty_config(dirs: Dirs) -> None:
    assert dict(dirs.provider().config()) == {}


def test_cache_lifetime(dirs: Dirs) -> None:
    clock = FakeClock()
    provider = dirs.provider(clock)
    path = dirs.preferred / "config.json"
    write_config_json(path, "one")
    assert provider.config()["r.io"].username == "one"

    write_config_json(path, "two")
    clock.now += 299.9
    assert provider.config()["r.io"].username == "one"  # still cached

    clock.now += 0.1  # exactly five minutes after the read
    assert provider.config()["r.io"].username == "two"

    path.unlink()
    clock.now += 100
    assert provider.config()["r.io"].username == "two"
    clock.now += 200
    assert dict(provider.config()) == {}  # the empty result is cached as well


def test_cache_counts_reads(dirs: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    provider = dirs.provider(clock)
    reads: list[Path] = []
    original = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    write_config_json(dirs.preferred / "config.json", "one")
    for _ in range(5):
        provider.config()
        clock.now += 10
    assert len(reads) == 1
    clock.now += 300
    provider.config()
    assert len(reads) == 2


def test_custom_ttl(dirs: Dirs) -> None:
    clock = FakeClock()
    provider = NodeDockerConfigProvider(
        dirs.preferred, work_dir=dirs.work, home=dirs.home, root=dirs.root, clock=clock, ttl=1.0
    )
    path = dirs.preferred / "config.json"
    write_config_json(path, "one")
    assert provider.config()["r.io"].username == "one"
    write_config_json(path, "two")
    clock.now += 1.0
    assert provider.config()["r.io"].username == "two"


def test_provider_keyring_has_no_source(dirs: Dirs) -> None:
    write_config_json(dirs.preferred / "config.json", "node")
    node = ProviderKeyring(dirs.provider())
    (cred,) = node.lookup("r.io/app")
    assert cred.username == "node"
    assert cred.source is None
    assert cred.credential_hash != ""
    assert node.lookup("other.io/app") == []


def test_node_keyring_after_pod_keyring(dirs: Dirs) -> None:
    write_config_json(dirs.preferred / "config.json", "node")
    pod = DockerKeyring()
    pod.add({"r.io": AuthEntry("pod", "p")})
    union = UnionKeyring(pod, ProviderKeyring(dirs.provider()))
    assert [c.username for c in union.lookup("r.io/app")] == ["pod", "node"]


def test_repr_does_not_leak(dirs: Dirs) -> None:
    (dirs.preferred / "config.json").write_text(
        json.dumps({"auths": {"r.io": {"username": "u", "password": "pa55word"}}})
    )
    provider = dirs.provider()
    assert "pa55word" not in repr(provider)
    assert "pa55word" not in repr(provider.config())
