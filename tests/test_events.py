"""Event recorders."""

from __future__ import annotations

import io
import threading

from pullwarden.events import Event, ListRecorder, StreamRecorder, TeeRecorder, make_event
from pullwarden.objects import Pod

POD = Pod(uid="u-1", namespace="team-a", name="web")


def test_event_line() -> None:
    event = make_event(POD, "Normal", "Pulling", 'Pulling image "nginx"')
    assert event == Event("Normal", "Pulling", 'Pulling image "nginx"', "team-a", "web", "u-1")
    assert event.line() == 'Normal  Pulling  team-a/web  Pulling image "nginx"'
    assert make_event(None, "Normal", "ImageGCed", "gone").line() == "Normal  ImageGCed  -  gone"


def test_list_recorder() -> None:
    recorder = ListRecorder()
    recorder.record(POD, "Warning", "Failed", "Error: ErrImagePull")
    recorder.record(POD, "Normal", "BackOff", "Back-off")
    assert recorder.reasons() == ["Failed", "BackOff"]
    assert recorder.messages() == ["Error: ErrImagePull", "Back-off"]
    assert len(recorder) == 2
    recorder.events.clear()  # a copy
    assert len(recorder) == 2
    recorder.clear()
    assert recorder.events == []


def test_stream_recorder_lines_do_not_interleave() -> None:
    out = io.StringIO()
    recorder = StreamRecorder(out, prefix="  event: ")

    def burst(i: int) -> None:
        for j in range(50):
            recorder.record(POD, "Normal", "Pulled", f"message {i}-{j}")

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 400
    assert all(line.startswith("  event: Normal  Pulled  team-a/web  message ") for line in lines)


def test_tee_recorder() -> None:
    a, b = ListRecorder(), ListRecorder()
    tee = TeeRecorder.of([a, None, b])
    tee.record(POD, "Normal", "Pulled", "ok")
    assert a.events == b.events == [make_event(POD, "Normal", "Pulled", "ok")]


def test_event_log_keeps_timed_events_and_writes_fixed_field_lines() -> None:
    from datetime import UTC, datetime, timedelta

    from pullwarden.events import EventLog

    times = iter(
        datetime(2026, 12, 2, 5, 23, 12, 900_000, tzinfo=UTC) + timedelta(seconds=s)
        for s in (0, 61)
    )
    out = io.StringIO()
    log = EventLog(out, now=lambda: next(times))
    pod = Pod(uid="u", namespace="team-a", name="web")
    log.record(pod, "Normal", "Pulling", 'Pulling image "x"')
    log.record(None, "Warning", "ImageGCFailed", "image GC failed: disk")
    assert out.getvalue().splitlines() == [
        '2026-12-02T05:23:12Z  Normal   Pulling  team-a/web  Pulling image "x"',
        "2026-12-02T05:24:13Z  Warning  ImageGCFailed  -  image GC failed: disk",
    ]
    assert log.to_json() == [
        {
            "time": "2026-12-02T05:23:12Z",
            "type": "Normal",
            "reason": "Pulling",
            "object": "team-a/web",
            "message": 'Pulling image "x"',
        },
        {
            "time": "2026-12-02T05:24:13Z",
            "type": "Warning",
            "reason": "ImageGCFailed",
            "object": "-",
            "message": "image GC failed: disk",
        },
    ]
    quiet = EventLog()  # no stream: kept only
    quiet.record(pod, "Normal", "Pulled", "m")
    assert [e.event.reason for e in quiet.events] == ["Pulled"]
