"""Bytecode for the package under test, as an installed package has it.

pip compiles a wheel's modules when it installs them, so a user's ``pullwarden`` process loads
``.pyc`` files.  An editable install has none until an import writes them — and never when
``PYTHONDONTWRITEBYTECODE`` is set, as it is on this machine, where every process would then
compile our modules from source (~50 ms of a pull's start-up).  The whole-process benchmarks
call :func:`ensure_bytecode` before they measure anything.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import pullwarden


def ensure_bytecode(*source_dirs: Path) -> None:
    """Write missing or stale ``.pyc`` files for the installed package (and ``source_dirs``)."""
    for directory in (Path(pullwarden.__file__).parent, *source_dirs):
        compileall.compile_dir(str(directory), quiet=1)
