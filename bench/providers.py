"""What a credential provider plugin costs a pull decision, beside the pull-secret path.

One pull manager over a record cache holds two records for one image: one pulled with a pod
Secret, one pulled with a service account's plugin credentials (KEP-4412).  Timed, in this
process, in rotating order, each ``--checks`` times (median, and p90):

* **secret pod**: the pod's credential lookup (its pull Secret hashed) and the decision that
  finds the secret's hash in the record;
* **service-account pod, warm plugin cache**: the lookup answered from the plugin cache
  (``cacheType: ServiceAccount``, an hour) and the decision that finds the service account;
* **service-account pod, cold plugin cache**: the same with ``cacheDuration: 0s``, so every
  lookup runs the plugin (a fork and exec of a small Python plugin, with a token from a real
  RSA-signed issuer) -- milliseconds, not microseconds.

Also the cold lookup alone (one plugin exec), a token signed for a new pod, and a token reused
(the issuer, like the kubelet's token manager, reuses a token until 80 % of its life).  The
plugin is ``tests/credentials/plugins/static_creds.py``; the token is signed by
``pullwarden.credentials.TokenIssuer``.

    python bench/providers.py [--checks 2000] [--cold 40]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pullwarden.credentials import (
    CredentialPlugins,
    CredentialProvider,
    CredentialProviderConfig,
    TokenAttributes,
    TokenIssuer,
)
from pullwarden.imagemanager import CredentialLookup
from pullwarden.metrics import Metrics
from pullwarden.objects import Pod, Secret, ServiceAccount
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import PullManager, open_kubelet_records
from pullwarden.records import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullSecret,
    ImagePullServiceAccount,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = REPO_ROOT / "tests" / "credentials" / "plugins" / "static_creds.py"
REGISTRY = "registry.example"
IMAGE = f"{REGISTRY}/team/app:v1"
REPO = f"{REGISTRY}/team/app"
SECRET_REF = "sha256:" + "1" * 64
ACCOUNT_REF = "sha256:" + "2" * 64
V1 = "credentialprovider.kubelet.k8s.io/v1"


def timed(action: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def cell(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    p90 = ordered[int(len(ordered) * 0.9) - 1] if len(ordered) >= 10 else ordered[-1]
    if median < 1e-3:
        return f"{median * 1e6:.1f} µs (p90 {p90 * 1e6:.1f})"
    return f"{median * 1e3:.2f} ms (p90 {p90 * 1e3:.2f})"


def secret_of(uid: str) -> Secret:
    import base64
    import json

    auth = base64.b64encode(b"secret-user:secret-pw").decode()
    config = json.dumps({"auths": {REGISTRY: {"auth": auth}}}).encode()
    return Secret(
        uid, "team-a", "regcred", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": config}
    )


def provider(duration: str) -> CredentialProvider:
    return CredentialProvider(
        name="static",
        match_images=("*.example",),
        default_cache_duration=0.0,
        api_version=V1,
        args=("--username", "plugin-user", "--password", "plugin-pw", "--cache-duration", duration),
        token_attributes=TokenAttributes(REGISTRY, "ServiceAccount", True, (), ()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--checks", type=int, default=2000, help="timed warm decisions per kind")
    parser.add_argument("--cold", type=int, default=40, help="timed cold decisions (plugin runs)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pwprov-bench-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    bin_dir = work / "bin"
    bin_dir.mkdir()
    shutil.copy(PLUGIN, bin_dir / "static")
    (bin_dir / "static").chmod(0o755)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = work / "sa.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    issuer = TokenIssuer(key_file, "https://issuer.example")
    warm = CredentialPlugins(CredentialProviderConfig((provider("1h"),)), bin_dir, tokens=issuer)
    cold = CredentialPlugins(CredentialProviderConfig((provider("0s"),)), bin_dir, tokens=issuer)

    secret = secret_of("secret-uid")
    account = ServiceAccount("sa-uid", "team-a", "builder")
    pod = Pod("pod-uid", "team-a", "p", service_account_name="builder")
    records = open_kubelet_records(work / "kubelet")
    now = datetime.now(UTC)
    hashed = CredentialLookup(IMAGE, [secret], None, track_hashes=True)()[0].credential_hash
    records.write_pulled_record(
        ImagePulledRecord(
            SECRET_REF,
            now,
            {
                REPO: ImagePullCredentials(
                    kubernetes_secrets=(ImagePullSecret("secret-uid", "team-a", "regcred", hashed),)
                )
            },
        )
    )
    records.write_pulled_record(
        ImagePulledRecord(
            ACCOUNT_REF,
            now,
            {
                REPO: ImagePullCredentials(
                    kubernetes_service_accounts=(
                        ImagePullServiceAccount("sa-uid", "team-a", "builder"),
                    )
                )
            },
        )
    )
    manager = PullManager(records, PolicyEnforcer(), None, metrics=Metrics())

    def decide_secret() -> None:
        lookup = CredentialLookup(IMAGE, [secret], None, track_hashes=True)
        decision = manager.decide(IMAGE, SECRET_REF, lookup.pod_credentials, write=False)
        assert not decision.must_pull, decision.reason

    def decide_account(plugins: CredentialPlugins) -> Callable[[], None]:
        def decide() -> None:
            lookup = CredentialLookup(
                IMAGE,
                [],
                None,
                track_hashes=True,
                plugin_keyring=plugins.keyring_for(pod, account),
            )
            decision = manager.decide(IMAGE, ACCOUNT_REF, lookup.pod_credentials, write=False)
            assert not decision.must_pull, decision.reason

        return decide

    decide_account(warm)()  # fills the warm cache (one plugin run)
    results: dict[str, list[float]] = {"secret": [], "warm": [], "cold": []}
    rounds = 4
    for round_no in range(rounds):
        order = ["secret", "warm", "cold"]
        order = order[round_no % 3 :] + order[: round_no % 3]
        for kind in order:
            if kind == "secret":
                results[kind] += timed(decide_secret, args.checks // rounds)
            elif kind == "warm":
                results[kind] += timed(decide_account(warm), args.checks // rounds)
            else:
                results[kind] += timed(decide_account(cold), max(1, args.cold // rounds))
    exec_only = timed(lambda: cold.keyring_for(pod, account).lookup(REPO), args.cold)
    reused = timed(
        lambda: issuer.token(pod=pod, service_account=account, audience=REGISTRY), args.checks
    )
    fresh_pods = iter(
        Pod(f"pod-{i}", "team-a", f"p{i}", service_account_name="builder")
        for i in range(args.checks)
    )
    signed = timed(
        lambda: issuer.token(pod=next(fresh_pods), service_account=account, audience=REGISTRY),
        args.checks,
    )

    print("### A pull decision for an image on the node (record hit), this process\n")
    print("| path | time per decision |")
    print("|---|---:|")
    print(f"| pod Secret (lookup + hash match) | {cell(results['secret'])} |")
    print(f"| service account, warm plugin cache | {cell(results['warm'])} |")
    print(f"| service account, cold cache (one plugin exec) | {cell(results['cold'])} |")
    print(f"| plugin lookup alone, cold (fork + exec + token) | {cell(exec_only)} |")
    print(f"| token for a new pod (RS256 signature) | {cell(signed)} |")
    print(f"| token reused (same pod, < 80 % of its life) | {cell(reused)} |")
    warm_ratio = statistics.median(results["warm"]) / statistics.median(results["secret"])
    cold_ratio = statistics.median(results["cold"]) / statistics.median(results["warm"])
    print(f"\nwarm service-account / secret: {warm_ratio:.2f}×; cold / warm: {cold_ratio:.0f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
