"""Credential provider plugins on the command line: the kubelet's flags, checked and loaded once.

``--image-credential-provider-config`` and ``--image-credential-provider-bin-dir`` are the
kubelet's own flags (both or neither); pullwarden has no API server, so the service-account
tokens of KEP-4412 plugins come from a key given as the API server's
``--service-account-signing-key-file`` and ``--service-account-issuer``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pullwarden.cli._common import die
from pullwarden.errors import ConfigError

if TYPE_CHECKING:  # the plugin machinery loads only when a provider config is given
    from pullwarden.credentials import CredentialPlugins

__all__ = ["credential_provider_options", "load_plugins"]

_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def credential_provider_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the four flags; the command receives them as ``provider_config``, ``provider_bin_dir``,
    ``signing_key_file`` and ``issuer`` (pass them to :func:`load_plugins`)."""
    options: list[_Decorator] = [
        click.option(
            "--image-credential-provider-config",
            "provider_config",
            type=click.Path(exists=True, path_type=Path),
            help="A CredentialProviderConfig (kubelet.config.k8s.io/v1, v1beta1 or v1alpha1) "
            "file, or a directory of *.json|*.yaml|*.yml files merged in lexical order: the "
            "exec plugins that supply registry credentials.  Needs "
            "--image-credential-provider-bin-dir.",
        ),
        click.option(
            "--image-credential-provider-bin-dir",
            "provider_bin_dir",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="The directory holding the plugin executables (named as the providers).",
        ),
        click.option(
            "--service-account-signing-key-file",
            "signing_key_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="A PEM private key (RSA >= 2048 bits, or EC P-256/P-384/P-521) signing the "
            "service-account tokens that plugins with tokenAttributes receive (KEP-4412), as "
            "the API server's flag of that name.  Needs --service-account-issuer.",
        ),
        click.option(
            "--service-account-issuer",
            "issuer",
            metavar="NAME",
            help="The iss claim of those tokens (the API server's flag of that name).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def load_plugins(
    provider_config: Path | None,
    provider_bin_dir: Path | None,
    signing_key_file: Path | None,
    issuer: str | None,
) -> CredentialPlugins | None:
    """The plugins the flags describe (None without a config); exits 2 on bad input."""
    if (signing_key_file is None) != (issuer is None):
        die("--service-account-signing-key-file and --service-account-issuer go together")
    if provider_config is None:
        if provider_bin_dir is not None or signing_key_file is not None:
            die(
                "--image-credential-provider-bin-dir and the service-account token flags need "
                "--image-credential-provider-config"
            )
        return None
    if provider_bin_dir is None:
        die("--image-credential-provider-config needs --image-credential-provider-bin-dir")
    from pullwarden.credentials import (
        CredentialPlugins,
        TokenIssuer,
        load_credential_provider_config,
    )

    try:
        config = load_credential_provider_config(provider_config)
        tokens = None
        if signing_key_file is not None:
            assert issuer is not None
            tokens = TokenIssuer(signing_key_file, issuer)
    except (ConfigError, OSError) as err:
        die(str(err))
    return CredentialPlugins(config, provider_bin_dir, tokens=tokens)
