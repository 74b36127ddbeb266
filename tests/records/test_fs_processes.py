"""Two processes rewriting the same record file never produce a torn file (spec §4.2).

The kubelet runs one writer per root, but an operator tool, a second node agent or a restarted
process overlapping its predecessor may write the same record at the same moment.  Each writer
must use a draft of its own: with one shared ``<target>.tmp`` the second writer truncates the
first one's draft, which the first then renames into place half written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pullwarden
from pullwarden.errors import RecordDecodeError
from pullwarden.records import FileRecordStore
from tests.records.rewrite_child import IMAGE_REF, record

CHILD = Path(__file__).with_name("rewrite_child.py")
SECONDS = 2.0


def test_two_processes_rewriting_one_record_never_tear(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    expected = [record(0), record(1)]
    store.write_pulled_record(expected[0])
    # The children import this very checkout of pullwarden, whatever is installed.
    src = str(Path(pullwarden.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    writers = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp_path), str(variant), str(SECONDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for variant in (0, 1)
    ]
    reads = torn = 0
    try:
        for w in writers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        while any(w.poll() is None for w in writers):
            try:
                got = store.get_pulled_record(IMAGE_REF)
            except RecordDecodeError:
                torn += 1
            else:
                assert got in expected
            reads += 1
        outputs = [w.communicate(timeout=30)[0].split() for w in writers]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
    writes = sum(int(out[0]) for out in outputs)
    failed_writes = sum(int(out[1]) for out in outputs)
    print(f"\n{writes} writes, {failed_writes} failed; {reads} reads, {torn} torn")
    assert reads > 0 and writes > 0
    assert torn == 0
    assert failed_writes == 0
    assert store.get_pulled_record(IMAGE_REF) in expected
    assert [n for n in os.listdir(store.pulled_dir) if n.endswith(".tmp")] == []
