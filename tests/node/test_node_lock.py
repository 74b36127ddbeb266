"""One node per root: a second Node (in this process or another) on the same root is refused.

Two processes sharing a root each trusted their own authoritative record cache, so a record the
other had just written was invisible and a credential-less pod got the image.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullwarden.cli import main
from pullwarden.config import default_kubelet_config
from pullwarden.errors import NodeBusyError
from pullwarden.node import Node
from pullwarden.records import FileRecordStore


def test_second_node_on_the_same_root_is_refused(tmp_path: Path) -> None:
    with Node(tmp_path, default_kubelet_config(), node_credentials=False):
        with pytest.raises(NodeBusyError, match=rf"pid {os.getpid()}.*one node per root"):
            Node(tmp_path, default_kubelet_config(), node_credentials=False)
        # another root is fine
        Node(tmp_path / "other", default_kubelet_config(), node_credentials=False).close()
    # released on close
    Node(tmp_path, default_kubelet_config(), node_credentials=False).close()


def test_a_failed_start_releases_the_root(tmp_path: Path) -> None:
    (tmp_path / "image_manager").write_text("not a directory")
    with pytest.raises(Exception, match="image_manager"):
        Node(tmp_path, default_kubelet_config(), node_credentials=False)
    (tmp_path / "image_manager").unlink()
    Node(tmp_path, default_kubelet_config(), node_credentials=False).close()


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pullwarden.config import default_kubelet_config
    from pullwarden.node import Node
    with Node(Path(sys.argv[1]), default_kubelet_config(), node_credentials=False):
        print("holding", flush=True)
        sys.stdin.read()
    """
)


def test_another_process_holding_the_root_makes_run_exit_3(tmp_path: Path) -> None:
    root = tmp_path / "node"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        manifest = tmp_path / "pods.yaml"
        manifest.write_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
            "spec: {containers: [{name: c, image: 'registry.example/app:v1'}]}\n"
        )
        args = ["run", "-f", str(manifest), "--root", str(root), "--no-node-credentials"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 3, result.output
        assert f"pid {holder.pid}" in result.stderr and "one node per root" in result.stderr
        assert "Traceback" not in result.output
        gc = CliRunner().invoke(main, ["gc", "--root", str(root)])
        assert gc.exit_code == 3
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    # the holder is gone: the root is free again
    gc = CliRunner().invoke(main, ["gc", "--root", str(root)])
    assert gc.exit_code == 0, gc.output


def test_node_start_sweeps_drafts_and_survives_a_nested_gc_state(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    draft = Path(store.record_path("sha256:" + "ab" * 32) + ".0123456789abcdef.tmp")
    draft.write_bytes(b"{")
    (tmp_path / "image_gc_state.json").write_text("[" * 100_000)
    Node(tmp_path, default_kubelet_config(), node_credentials=False).close()
    assert not draft.exists()
