"""No credential reaches an error message through text the registry or token server chose.

A hostile or careless registry can echo what it was sent in any field that pullwarden shows: the
error ``code`` (which pullwarden upper-cases), the HTTP reason phrase, the error ``message`` and
``detail``, the Bearer challenge's ``error`` and scheme, the token server's status line, the
manifest media type.  Each case below echoes the password (or the bearer token) in lower, upper
and mixed case; the message must not contain it, nor any 8-character piece of it, in any case.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from collections.abc import Callable

import pytest

from pullwarden.errors import RegistryError
from pullwarden.runtime import AuthConfig, RegistryClient
from pullwarden.runtime._messages import Request, Response
from pullwarden.runtime._scrub import Scrubber, mask_secrets, quotes_secret
from pullwarden.testing import MockTransport

PASSWORD = "Zq7-Hunter2-Xy9"
TOKEN = "Tok3n-AbCdEf-123456"
AUTH = AuthConfig("alice", PASSWORD)
IMAGE = "127.0.0.1:5000/ns/x:v1"
REALM = "http://127.0.0.1:5080/token"
WINDOW = 8

CASES: dict[str, Callable[[str], str]] = {
    "lower": str.lower,
    "upper": str.upper,
    "mixed": str.swapcase,
    "same": str,
}

Answer = Callable[[str], Response]


def leaks(message: str, secret: str) -> bool:
    folded, want = message.casefold(), secret.casefold()
    return any(want[i : i + WINDOW] in folded for i in range(len(want) - WINDOW + 1))


def errors_body(**entry: object) -> dict[str, object]:
    return {"errors": [entry]}


def reason(status: int, phrase: str, **kwargs: object) -> Response:
    return Response(status, extensions={"reason_phrase": phrase.encode()}, **kwargs)  # type: ignore[arg-type]


# Each answer is what the registry sends to an authenticated manifest request.
REGISTRY_ANSWERS: dict[str, Answer] = {
    "code-400": lambda s: Response(400, json=errors_body(code=s, message="bad")),
    "code-403": lambda s: Response(403, json=errors_body(code=s)),
    "code-401-retry": lambda s: Response(409, json=errors_body(code=s + "_x")),
    "reason-400": lambda s: reason(400, s),
    "reason-403": lambda s: reason(403, s),
    "reason-404": lambda s: reason(404, s),
    "reason-500": lambda s: reason(500, s),
    "message-denied": lambda s: Response(
        403, json=errors_body(code="DENIED", message=f"password {s} is wrong")
    ),
    "message-unknown": lambda s: Response(400, json=errors_body(code="UNSUPPORTED", message=s)),
    "message-not-found": lambda s: Response(
        404, json=errors_body(code="MANIFEST_UNKNOWN", message=f"no {s}")
    ),
    "detail": lambda s: Response(
        400, json=errors_body(code="UNSUPPORTED", message="m", detail={"password": s})
    ),
    "media-type": lambda s: Response(
        200, headers={"Content-Type": f"application/{s}"}, content=b"{}"
    ),
    "challenge-scheme": lambda s: Response(401, headers={"WWW-Authenticate": f'{s} realm="x"'}),
}


def registry_client(answer: Response, basic: bool = True) -> RegistryClient:
    def handler(request: Request) -> Response:
        if "Authorization" not in request.headers and basic:
            return Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return answer

    return RegistryClient(transport=MockTransport(handler), retries=1, sleep=lambda s: None)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("field", REGISTRY_ANSWERS)
def test_registry_fields_echoing_the_password(field: str, case: str) -> None:
    answer = REGISTRY_ANSWERS[field](CASES[case](PASSWORD))
    with registry_client(answer) as client, pytest.raises(RegistryError) as info:
        client.get_manifest(IMAGE, AUTH)
    message = str(info.value)
    assert "ns/x" in message  # the message still says what failed
    assert not leaks(message, PASSWORD), message
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert not leaks(message, encoded), message


# Each answer is what the token server sends; the registry asks for a Bearer token first.
TOKEN_ANSWERS: dict[str, Answer] = {
    "reason-400": lambda s: reason(400, s),
    "reason-500": lambda s: reason(500, s),
    "reason-403": lambda s: reason(403, s),
    "reason-401": lambda s: reason(401, s, json={"details": s}),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("field", TOKEN_ANSWERS)
def test_token_server_fields_echoing_the_password(field: str, case: str) -> None:
    answer = TOKEN_ANSWERS[field](CASES[case](PASSWORD))

    def handler(request: Request) -> Response:
        if request.url.path == "/token":
            return answer
        return Response(401, headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})

    client = RegistryClient(transport=MockTransport(handler), retries=1, sleep=lambda s: None)
    with client, pytest.raises(RegistryError) as info:
        client.head_manifest(IMAGE, AUTH)
    assert "ns/x" in str(info.value)
    assert not leaks(str(info.value), PASSWORD), str(info.value)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("where", ["challenge-error", "code", "message"])
def test_registry_echoing_the_bearer_token(where: str, case: str) -> None:
    echoed = CASES[case](TOKEN)

    def handler(request: Request) -> Response:
        if request.url.path == "/token":
            return Response(200, json={"token": TOKEN})
        challenge = f'Bearer realm="{REALM}"'
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Response(401, headers={"WWW-Authenticate": challenge})
        if where == "challenge-error":
            challenge += f',error="{echoed}"'
            return Response(401, headers={"WWW-Authenticate": challenge})
        if where == "code":
            return Response(400, json=errors_body(code=echoed))
        return Response(400, json=errors_body(code="X", message=echoed))

    client = RegistryClient(transport=MockTransport(handler), retries=0, sleep=lambda s: None)
    with client, pytest.raises(RegistryError) as info:
        client.head_manifest(IMAGE, AUTH) if where != "code" else client.get_manifest(IMAGE, AUTH)
    assert "ns/x" in str(info.value)
    assert not leaks(str(info.value), TOKEN), str(info.value)


def test_quotes_secret_ignores_case() -> None:
    secrets = {PASSWORD}
    assert quotes_secret(PASSWORD.upper(), secrets)
    assert quotes_secret(f"x {PASSWORD.swapcase()[2:12]} y", secrets)
    assert not quotes_secret("nothing to see", secrets)
    assert quotes_secret("STRASSE-1234", {"straße-1234"})  # upper() of ß is SS
    assert quotes_secret("pw=AB", {"ab"})


def test_mask_secrets_masks_every_piece_in_any_case() -> None:
    secrets = {PASSWORD, "straße-1234"}
    assert mask_secrets(f"a {PASSWORD.upper()} b", secrets) == "a *** b"
    assert mask_secrets(f"a {PASSWORD.lower()[3:]} b", secrets) == "a *** b"
    assert mask_secrets("x STRASSE-1234 y", secrets) == "x *** y"
    assert mask_secrets(f"{PASSWORD}{PASSWORD.swapcase()}", secrets) == "***"
    assert mask_secrets("nothing here", secrets) == "nothing here"
    assert mask_secrets("ab ab", {"ab"}) == "ab ab"  # too short to mask (fields are checked)


# --- the scrubber of one operation -------------------------------------------------------------


def test_a_target_is_immutable_and_its_repr_shows_no_secret() -> None:
    client = RegistryClient(transport=MockTransport(lambda r: Response(200)))
    with client:
        target = client._target(IMAGE, AUTH, "pulling", "pull")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.tag = "v2"  # type: ignore[misc]
    target.scrubber.add(TOKEN)
    shown = repr(target)
    assert not leaks(shown, PASSWORD) and not leaks(shown, TOKEN), shown
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert target.scrubber.secrets() == {PASSWORD, encoded, TOKEN}
    assert target.message(f"got {TOKEN.lower()}") == f"pulling {IMAGE}: got ***"


def test_the_scrubber_is_safe_to_share_between_threads() -> None:
    scrubber = Scrubber([PASSWORD])
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def add(n: int) -> None:
        start.wait()
        for i in range(3000):
            scrubber.add(f"secret-{n}-{i:06d}")

    def mask() -> None:
        start.wait()
        try:
            for _ in range(200):
                assert "***" in scrubber.mask(f"x {PASSWORD} y")
        except BaseException as err:  # a set changing size mid-iteration, say
            errors.append(err)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=mask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(scrubber.secrets()) == 1 + 3 * 3000
    assert PASSWORD not in repr(scrubber)
