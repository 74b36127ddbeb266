"""Registry credentials and connection options shared by `pull` and `image build --push`.

The options follow what skopeo and podman users type: ``--creds USER[:PASSWORD]``,
``-u USER`` with ``--password-stdin`` (or a hidden prompt on a terminal), ``--authfile FILE``
(``--docker-config`` is the older spelling of it), and with none of them the default auth file.
Nothing here prints or logs a credential.

Loads no HTTP stack: the CA check imports the registry client only when ``--ca-file`` is given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pullwarden.errors import DockerConfigError
from pullwarden.reference import parse_image_name, parse_normalized
from pullwarden.runtime import AuthConfig

if TYPE_CHECKING:  # the credentials package and the registry client load on use
    from pullwarden.credentials import CredentialPlugins, Keyring, PluginFailure
    from pullwarden.runtime import HostOptions

__all__ = [
    "AUTHFILE_ORDER_HELP",
    "BadCredentialOptions",
    "candidate_auths",
    "credential_options",
    "default_auth_file",
    "parse_hosts",
    "tls_options",
]

AUTHFILE_ORDER_HELP = (
    "$REGISTRY_AUTH_FILE, else $DOCKER_CONFIG/config.json, else ~/.docker/config.json "
    "(the first that exists)"
)


class BadCredentialOptions(ValueError):
    """The credential options are contradictory or incomplete; the message names no secret."""


def credential_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--creds``, ``-u/--username``, ``--password-stdin`` and ``--authfile`` for ``what``
    (a phrase such as "the image's registry")."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(
            [
                click.option(
                    "--creds",
                    metavar="USER[:PASSWORD]",
                    help="Use these credentials (no :PASSWORD: prompt for it on a terminal).  "
                    "Mind that a password on the command line shows in `ps`; "
                    "-u with --password-stdin does not.",
                ),
                click.option(
                    "--username",
                    "-u",
                    help="Registry user name; the password comes from --password-stdin, "
                    "else a hidden prompt (stdin must then be a terminal).",
                ),
                click.option(
                    "--password-stdin",
                    is_flag=True,
                    help="Read the password for -u from the first line of standard input.",
                ),
                click.option(
                    "--authfile",
                    "--docker-config",
                    "authfile",
                    metavar="FILE",
                    type=click.Path(dir_okay=False, path_type=Path),
                    help=f"A docker config.json-format auth file: its entries for {what} are "
                    "tried in order.  With no credential option the default auth file is "
                    f"read: {AUTHFILE_ORDER_HELP}; with none of those, anonymous.",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def default_auth_file() -> Path | None:
    """The auth file read when no credential option is given (see :data:`AUTHFILE_ORDER_HELP`)."""
    candidates: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        candidates.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("DOCKER_CONFIG"):
        candidates.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    candidates.append(Path.home() / ".docker" / "config.json")
    for path in candidates:
        if path.is_file():
            return path
    return None


def _password_for(user: str, password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise BadCredentialOptions(
            f"no password for {user!r}: give it with --password-stdin (or --creds USER:PASSWORD), "
            "or run on a terminal to be prompted"
        )
    password: str = click.prompt(f"Password for {user}", hide_input=True, err=True)
    return password


def _explicit(
    creds: str | None, username: str | None, password_stdin: bool, authfile: Path | None
) -> AuthConfig | None:
    """The one credential the command line names, or None when it names none."""
    if creds is not None and username is not None:
        raise BadCredentialOptions("--creds and -u/--username both name a user: give one of them")
    if creds is not None and password_stdin:
        raise BadCredentialOptions(
            "--password-stdin goes with -u/--username; --creds carries USER[:PASSWORD] itself"
        )
    if password_stdin and username is None:
        raise BadCredentialOptions("--password-stdin needs -u/--username")
    if (creds is not None or username is not None) and authfile is not None:
        raise BadCredentialOptions(
            "--authfile and explicit credentials (--creds, -u) both say what to use: give one"
        )
    if creds is not None:
        user, sep, password = creds.partition(":")
        if not user:
            raise BadCredentialOptions("--creds needs a user name: USER[:PASSWORD]")
        return AuthConfig(username=user, password=password if sep else _password_for(user, False))
    if username is not None:
        if not username:
            raise BadCredentialOptions("-u/--username must not be empty")
        return AuthConfig(username=username, password=_password_for(username, password_stdin))
    return None


def candidate_auths(
    image: str,
    *,
    creds: str | None,
    username: str | None,
    password_stdin: bool,
    authfile: Path | None,
    plugins: CredentialPlugins | None = None,
) -> list[AuthConfig | None]:
    """The credentials to try for ``image``, in order ([None] = anonymous).

    The command line's one credential (--creds, -u), else the auth file's entries for the
    image (--authfile, else the default auth file), followed by the credential provider
    plugins' (no pod: node-wide plugins only), as the kubelet walks its keyring.  Raises
    :class:`BadCredentialOptions` (its message names no secret) for bad input.
    """
    explicit = _explicit(creds, username, password_stdin, authfile)
    if explicit is not None:
        return [explicit]
    from pullwarden.credentials import DockerKeyring, UnionKeyring, parse_config_json

    keyrings: list[Keyring] = []
    path = authfile
    if path is not None and not path.is_file():
        raise BadCredentialOptions(f"auth file {path} does not exist or is not a file")
    source = "auth file"
    if path is None:
        path = default_auth_file()
        source = "default auth file"
    if path is not None:
        try:
            config = parse_config_json(path.read_bytes())
        except OSError as err:
            raise BadCredentialOptions(f"cannot read {source} {path}: {err.strerror}") from None
        except DockerConfigError as err:
            raise BadCredentialOptions(f"{source} {path}: {err}") from None
        keyring = DockerKeyring()
        keyring.add(config, track_hashes=False)
        keyrings.append(keyring)
    if plugins is not None:
        keyrings.append(plugins.keyring_for(None, None, report_plugin_failure))
    repository, _tag, _digest = parse_image_name(image)
    found = UnionKeyring(*keyrings).lookup(repository)
    return [AuthConfig(username=c.username, password=c.password) for c in found] or [None]


def report_plugin_failure(failure: PluginFailure) -> None:
    click.echo(
        f"warning: credential provider {failure.provider} gave no credentials for "
        f"{failure.image}: {failure.message}",
        err=True,
    )


def tls_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--insecure-registry`` and ``--ca-file`` (``what`` is appended to their help)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--ca-file",
            "ca_files",
            multiple=True,
            metavar="[HOST=]PATH",
            help="Trust this CA for the registry's TLS (HOST defaults to the image's "
            f"registry).{what}",
        )(command)
        return click.option(
            "--insecure-registry",
            "insecure",
            multiple=True,
            metavar="HOST[:PORT]",
            help="Use plain HTTP for this registry (loopback registries are plain HTTP by "
            f"default).{what}",
        )(command)

    return decorate


def parse_hosts(
    insecure: tuple[str, ...], ca_files: tuple[str, ...], image: str
) -> dict[str, HostOptions]:
    """Per-host connection options; each CA file is read and checked before any request."""
    if not insecure and not ca_files:
        return {}
    from pullwarden.runtime import HostOptions, load_ca_file

    hosts: dict[str, HostOptions] = {
        _host_option(host, "--insecure-registry"): HostOptions(insecure=True) for host in insecure
    }
    for item in ca_files:
        host, sep, path = item.rpartition("=")
        host = _host_option(host, "--ca-file") if sep else parse_normalized(image).domain
        ca = Path(path)
        if not ca.exists():
            raise click.BadParameter(f"CA file {path!r} does not exist", param_hint="--ca-file")
        try:
            load_ca_file(ca)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--ca-file") from None
        hosts[host] = HostOptions(insecure=False, ca_file=ca)
    return hosts


def _host_option(host: str, option: str) -> str:
    """``host`` when it is ``name[:port]`` a URL can reach; else a usage error for ``option``."""
    from pullwarden.runtime import URL

    if host and not any(c in host for c in "/?#@"):  # which a URL would take as not the host
        try:
            URL(f"https://{host}")
            return host
        except ValueError:  # a bad character, port or DNS label
            pass
    raise click.BadParameter(f"invalid registry host {host!r}", param_hint=option)
