"""Kubelet-style events: what happened to a pod's images, in the kubelet's words (spec §1.7).

An :class:`EventRecorder` receives events; :class:`ListRecorder` keeps them (tests, JSON
output), :class:`StreamRecorder` prints one ``kubectl describe``-like line per event as it
happens, and :class:`TeeRecorder` hands each event to several recorders.  :class:`EventLog`
keeps each event with the time it happened and can also print it at once as a fixed-field line
(``pullwarden run``: :meth:`TimedEvent.line` in table mode, :meth:`TimedEvent.to_json` under
``"events"`` with ``-o json``).

Messages are expected to be free of secrets already: the image manager only ever puts image
names, Secret coordinates and error texts (which never carry credentials) into them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final, Protocol, TextIO

from pullwarden._values import frozen

__all__ = [
    "BACK_OFF",
    "ERR_IMAGE_NEVER_PULL_POLICY",
    "FAILED",
    "FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET",
    "IGNORED_IMAGE_PULL_SECRET",
    "INSPECT_FAILED",
    "NORMAL",
    "PULLED",
    "PULLING",
    "WARNING",
    "Event",
    "EventLog",
    "EventRecorder",
    "InvolvedObject",
    "ListRecorder",
    "StreamRecorder",
    "TeeRecorder",
    "TimedEvent",
    "Writable",
    "make_event",
]

# Event types.
NORMAL: Final = "Normal"
WARNING: Final = "Warning"

# Reasons the image path emits (k/k pkg/kubelet/events).
PULLING: Final = "Pulling"
PULLED: Final = "Pulled"
FAILED: Final = "Failed"
BACK_OFF: Final = "BackOff"
ERR_IMAGE_NEVER_PULL_POLICY: Final = "ErrImageNeverPull"
INSPECT_FAILED: Final = "InspectFailed"
FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET: Final = "FailedToRetrieveImagePullSecret"
# pullwarden's own: the kubelet only logs a credential provider plugin that failed.
CREDENTIAL_PROVIDER_FAILED: Final = "CredentialProviderFailed"
# pullwarden's own: the kubelet silently skips a pull Secret of a type it does not read.
IGNORED_IMAGE_PULL_SECRET: Final = "IgnoredImagePullSecret"


class InvolvedObject(Protocol):
    """What an event needs to know of the object it is about (a Pod fits)."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> str: ...


@frozen
class Event:
    """One event.  ``namespace``/``name``/``uid`` name the involved object ("" for the node)."""

    type: str  # NORMAL or WARNING
    reason: str
    message: str
    namespace: str = ""
    name: str = ""
    uid: str = ""

    @property
    def object(self) -> str:
        """``namespace/name`` of the involved object, or ``-`` for an event about the node."""
        if not self.name:
            return "-"
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def line(self) -> str:
        """``<Type>  <Reason>  <namespace/name>  <message>`` (two spaces between columns)."""
        return f"{self.type}  {self.reason}  {self.object}  {self.message}"


def make_event(obj: InvolvedObject | None, type: str, reason: str, message: str) -> Event:
    """An :class:`Event` about ``obj`` (``None``: about the node itself)."""
    if obj is None:
        return Event(type, reason, message)
    return Event(type, reason, message, obj.namespace, obj.name, obj.uid)


class EventRecorder(Protocol):
    """Receives events; implementations must be safe to call from several threads."""

    def record(self, obj: InvolvedObject | None, type: str, reason: str, message: str) -> None: ...


class ListRecorder:
    """Keeps every event in order; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def record(self, obj: InvolvedObject | None, type: str, reason: str, message: str) -> None:
        event = make_event(obj, type, reason, message)
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Event]:
        """A copy of the events recorded so far."""
        with self._lock:
            return list(self._events)

    def reasons(self) -> list[str]:
        return [event.reason for event in self.events]

    def messages(self) -> list[str]:
        return [event.message for event in self.events]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)


class StreamRecorder:
    """Writes each event as one line (``prefix`` + :meth:`Event.line`) to ``stream``.

    ``stream`` defaults to the standard output at the time of each write.  Lines from several
    threads never interleave.
    """

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "") -> None:
        self._stream = stream
        self._prefix = prefix
        self._lock = threading.Lock()

    def record(self, obj: InvolvedObject | None, type: str, reason: str, message: str) -> None:
        line = self._prefix + make_event(obj, type, reason, message).line() + "\n"
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()


class TeeRecorder:
    """Hands every event to each of ``recorders`` in turn."""

    def __init__(self, *recorders: EventRecorder) -> None:
        self._recorders: tuple[EventRecorder, ...] = recorders

    @classmethod
    def of(cls, recorders: Iterable[EventRecorder | None]) -> TeeRecorder:
        """A tee over the recorders that are not ``None``."""
        return cls(*(r for r in recorders if r is not None))

    def record(self, obj: InvolvedObject | None, type: str, reason: str, message: str) -> None:
        for recorder in self._recorders:
            recorder.record(obj, type, reason, message)


@frozen
class TimedEvent:
    """An :class:`Event` and when it was recorded (UTC)."""

    time: datetime
    event: Event

    @property
    def timestamp(self) -> str:
        """RFC 3339 in UTC to the second: ``2026-12-02T05:23:12Z``."""
        return self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def line(self) -> str:
        """``TIME  TYPE  REASON  OBJECT  MESSAGE``: two spaces apart, the type padded to seven
        characters (``Normal`` / ``Warning``), the object ``namespace/name`` or ``-``."""
        e = self.event
        return f"{self.timestamp}  {e.type:<7}  {e.reason}  {e.object}  {e.message}"

    def to_json(self) -> dict[str, str]:
        """``{"time", "type", "reason", "object", "message"}``."""
        e = self.event
        return {
            "time": self.timestamp,
            "type": e.type,
            "reason": e.reason,
            "object": e.object,
            "message": e.message,
        }


class Writable(Protocol):
    """Where :class:`EventLog` writes its lines (a text stream fits)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class EventLog:
    """Keeps every event with its time, in order; with ``stream``, also writes each one as
    :meth:`TimedEvent.line` the moment it is recorded.  Thread-safe; lines never interleave.

    ``now`` gives the time of an event (default: the wall clock, in UTC).
    """

    def __init__(
        self, stream: Writable | None = None, *, now: Callable[[], datetime] | None = None
    ) -> None:
        self._stream = stream
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._events: list[TimedEvent] = []

    def record(self, obj: InvolvedObject | None, type: str, reason: str, message: str) -> None:
        with self._lock:
            timed = TimedEvent(self._now(), make_event(obj, type, reason, message))
            self._events.append(timed)
            if self._stream is not None:
                self._stream.write(timed.line() + "\n")
                self._stream.flush()

    @property
    def events(self) -> list[TimedEvent]:
        """A copy of the events recorded so far."""
        with self._lock:
            return list(self._events)

    def to_json(self) -> list[dict[str, str]]:
        return [e.to_json() for e in self.events]
