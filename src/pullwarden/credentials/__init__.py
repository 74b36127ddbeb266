"""Docker configs, pull secrets, the credential keyring and the kubelet's credential hash.

Spec §2 (credentials) and §3 (credential hash).  Nothing here ever puts a password or ``auth``
value into a repr, an exception message or a log line.

The exec plugins (``_plugins``, ``_provider_config``: subprocesses, YAML) and the token issuer
(``_tokens``) are imported on first use (PEP 562): a node or a command without plugins never
loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pullwarden._facade import lazy_names
from pullwarden.credentials._dockerconfig import (
    AuthEntry,
    DockerConfig,
    config_from_secret,
    parse_config_json,
    parse_dockercfg,
)
from pullwarden.credentials._hashing import canonical_auth_json, credential_hash
from pullwarden.credentials._keyring import (
    CredentialSource,
    DockerKeyring,
    Keyring,
    SecretLike,
    SecretSource,
    ServiceAccountSource,
    TrackedCredential,
    UnionKeyring,
    is_docker_hub_image,
    keyring_from_secrets,
    pod_credentials,
    tracked_to_image_pull_credentials,
    url_matches,
)
from pullwarden.credentials._providers import (
    DockerConfigProvider,
    NodeDockerConfigProvider,
    ProviderKeyring,
)

if TYPE_CHECKING:
    from pullwarden.credentials._plugins import (
        CredentialPlugins,
        PluginFailure,
        ServiceAccountTokenSource,
    )
    from pullwarden.credentials._provider_config import (
        CredentialProvider,
        CredentialProviderConfig,
        TokenAttributes,
        load_credential_provider_config,
    )
    from pullwarden.credentials._tokens import (
        DEFAULT_TOKEN_LIFETIME,
        TokenIssuer,
        TokenVerificationError,
        verify_token,
    )

_LAZY = {
    "CredentialPlugins": "pullwarden.credentials._plugins",
    "CredentialProvider": "pullwarden.credentials._provider_config",
    "CredentialProviderConfig": "pullwarden.credentials._provider_config",
    "DEFAULT_TOKEN_LIFETIME": "pullwarden.credentials._tokens",
    "PluginFailure": "pullwarden.credentials._plugins",
    "ServiceAccountTokenSource": "pullwarden.credentials._plugins",
    "TokenAttributes": "pullwarden.credentials._provider_config",
    "TokenIssuer": "pullwarden.credentials._tokens",
    "TokenVerificationError": "pullwarden.credentials._tokens",
    "load_credential_provider_config": "pullwarden.credentials._provider_config",
    "verify_token": "pullwarden.credentials._tokens",
}

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "AuthEntry",
    "CredentialPlugins",
    "CredentialProvider",
    "CredentialProviderConfig",
    "CredentialSource",
    "DockerConfig",
    "DockerConfigProvider",
    "DockerKeyring",
    "Keyring",
    "NodeDockerConfigProvider",
    "PluginFailure",
    "ProviderKeyring",
    "SecretLike",
    "SecretSource",
    "ServiceAccountSource",
    "ServiceAccountTokenSource",
    "TokenAttributes",
    "TokenIssuer",
    "TokenVerificationError",
    "TrackedCredential",
    "UnionKeyring",
    "canonical_auth_json",
    "config_from_secret",
    "credential_hash",
    "is_docker_hub_image",
    "keyring_from_secrets",
    "load_credential_provider_config",
    "parse_config_json",
    "parse_dockercfg",
    "pod_credentials",
    "tracked_to_image_pull_credentials",
    "url_matches",
    "verify_token",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
