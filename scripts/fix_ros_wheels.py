"""Repair the CMake files of the ros-kilted-* wheels so colcon can build interfaces from them.

The wheels' exported CMake files of the Python generators name the wheel builder's
interpreter (``/opt/python/cp311-cp311/...``) for the Python and numpy include directories.
This rewrites them to this venv's interpreter. Running it again changes nothing.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

BUILDER_PREFIX = re.compile(r"/opt/python/cp3\d+-cp3\d+[^\";) \n]*")


def local_path_for(builder_path: str) -> str:
    """Map one path of the wheel builder's interpreter to this interpreter's equivalent."""
    if "numpy" in builder_path:
        return numpy.get_include()
    if "/include/python3" in builder_path:
        return sysconfig.get_paths()["include"]
    raise ValueError(f"no local equivalent known for the wheel builder's path {builder_path}")


def fix_cmake_files(prefix: Path) -> list[Path]:
    """Rewrite every ``share/**/*.cmake`` under ``prefix``; return the files changed."""
    changed = []
    for cmake_file in sorted((prefix / "share").rglob("*.cmake")):
        text = cmake_file.read_text()
        fixed = BUILDER_PREFIX.sub(lambda match: local_path_for(match.group(0)), text)
        if fixed != text:
            cmake_file.write_text(fixed)
            changed.append(cmake_file)
    return changed


def main() -> int:
    prefix = Path(sys.prefix)
    changed = fix_cmake_files(prefix)
    print(f"fix_ros_wheels: {len(changed)} CMake file(s) rewritten under {prefix}/share")
    return 0


if __name__ == "__main__":
    sys.exit(main())
