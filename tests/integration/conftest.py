"""Fixtures that run the real registry, token server and skopeo on loopback (see infra.py).

Tests here are skipped when ``docker-registry`` or ``skopeo`` is missing, unless
``PULLWARDEN_REQUIRE_REAL=1`` (set by CI), which turns the skip into a failure. The containerd
fixtures (see containerd.py) follow the same rule for containerd, ctr, root, grpcio and cri_api.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration.containerd import Containerd, containerd_missing
from tests.integration.infra import (
    AuthMode,
    Pki,
    Registry,
    Seeded,
    Skopeo,
    TestImages,
    TokenServer,
    build_test_images,
    make_pki,
    missing_tools,
    seed,
    seed_one,
)

REQUIRE_REAL_ENV = "PULLWARDEN_REQUIRE_REAL"

RegistryFactory = Callable[..., Registry]
ContainerdFactory = Callable[..., Containerd]


@pytest.fixture(scope="session")
def real_components() -> None:
    """Skip (or, with PULLWARDEN_REQUIRE_REAL=1, fail) when the real binaries are missing."""
    missing = missing_tools()
    if not missing:
        return
    reason = (
        f"real-component tests need {' and '.join(missing)} on PATH "
        "(apt-get install -y --no-install-recommends docker-registry skopeo)"
    )
    if os.environ.get(REQUIRE_REAL_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_REAL_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def token_server(pki: Pki) -> Iterator[TokenServer]:
    server = TokenServer(pki)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def skopeo(real_components: None, tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture(scope="session")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    return build_test_images(tmp_path_factory.mktemp("images") / "layout")


def _session_registry(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *,
    auth: AuthMode = "none",
    tls: bool = False,
    pki: Pki | None = None,
    token_server: TokenServer | None = None,
) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp(f"registry-{name}")
    registry = Registry(workdir, auth=auth, tls=tls, pki=pki, token_server=token_server)
    try:
        registry.start()
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def registry_noauth(
    real_components: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    yield from _session_registry(tmp_path_factory, "noauth")


@pytest.fixture(scope="session")
def registry_basic(
    real_components: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """htpasswd (bcrypt cost 4) with alice and bob."""
    yield from _session_registry(tmp_path_factory, "basic", auth="basic")


@pytest.fixture(scope="session")
def registry_token(
    real_components: None,
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    token_server: TokenServer,
) -> Iterator[Registry]:
    """Token auth through ``token_server`` (alice: private/alice, ns/*; bob: ns/* pull)."""
    yield from _session_registry(
        tmp_path_factory, "token", auth="token", pki=pki, token_server=token_server
    )


@pytest.fixture(scope="session")
def registry_tls(
    real_components: None, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[Registry]:
    """HTTPS with a certificate from the test CA (``.ca_file``), no auth."""
    yield from _session_registry(tmp_path_factory, "tls", tls=True, pki=pki)


@pytest.fixture(scope="session")
def seeded(
    skopeo: Skopeo,
    test_images: TestImages,
    registry_noauth: Registry,
    registry_basic: Registry,
    registry_token: Registry,
    registry_tls: Registry,
) -> Seeded:
    """All four registries, filled by ``skopeo copy`` as infra.SEED_PLAN says."""
    registries = {
        "noauth": registry_noauth,
        "basic": registry_basic,
        "token": registry_token,
        "tls": registry_tls,
    }
    return seed(skopeo, test_images, registries)


@pytest.fixture
def registry_factory(
    real_components: None, tmp_path: Path, pki: Pki, token_server: TokenServer
) -> Iterator[RegistryFactory]:
    """Make extra registries for one test: ``registry_factory(auth="basic", tls=True)``.

    Every registry made is stopped when the test ends.
    """
    made: list[Registry] = []

    def make(*, auth: AuthMode = "none", tls: bool = False, start: bool = True) -> Registry:
        registry = Registry(
            tmp_path / f"registry-{len(made)}",
            auth=auth,
            tls=tls,
            pki=pki,
            token_server=token_server if auth == "token" else None,
        )
        made.append(registry)
        if start:
            registry.start()
        return registry

    try:
        yield make
    finally:
        for registry in made:
            registry.stop()


@pytest.fixture
def fresh_registry(
    registry_factory: RegistryFactory, skopeo: Skopeo, test_images: TestImages
) -> Registry:
    """A private no-auth registry holding ``ns/hello:v1``, free to be stopped and restarted."""
    registry = registry_factory()
    seed_one(skopeo, test_images, registry, "hello", "ns/hello:v1", None)
    return registry


# --------------------------------------------------------------------------------------------
# containerd


@pytest.fixture(scope="session")
def containerd_components() -> None:
    """Skip (or, with PULLWARDEN_REQUIRE_REAL=1, fail) when containerd cannot run here."""
    missing = containerd_missing()
    if not missing:
        return
    reason = (
        f"containerd tests need {' and '.join(missing)} "
        "(apt-get install -y --no-install-recommends containerd; "
        "pip install grpcio container-runtime-interface-api; run as root)"
    )
    if os.environ.get(REQUIRE_REAL_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_REAL_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def containerd_daemon(
    containerd_components: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Containerd]:
    """One containerd for the session; use ``containerd``, which resets it for each test."""
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def containerd(
    containerd_daemon: Containerd,
    seeded: Seeded,
    registry_noauth: Registry,
    registry_basic: Registry,
    registry_token: Registry,
    registry_tls: Registry,
) -> Containerd:
    """The session containerd, running, without images, trusting the four seeded registries.

    A test may stop or restart it; the next test's setup starts it again.
    """
    containerd_daemon.start()
    for registry in (registry_noauth, registry_basic, registry_token, registry_tls):
        containerd_daemon.trust(registry)
    containerd_daemon.remove_all_images()
    return containerd_daemon


@pytest.fixture
def containerd_factory(containerd_components: None, tmp_path: Path) -> Iterator[ContainerdFactory]:
    """Private containerds for one test: ``containerd_factory(trust=[registry_tls])``.

    Each one is started unless ``start=False``, and stopped when the test ends.
    """
    made: list[Containerd] = []

    def make(*, trust: Sequence[Registry] = (), start: bool = True) -> Containerd:
        daemon = Containerd(tmp_path / f"containerd-{len(made)}")
        made.append(daemon)
        for registry in trust:
            daemon.trust(registry)
        if start:
            daemon.start()
        return daemon

    try:
        yield make
    finally:
        for daemon in made:
            daemon.stop()
