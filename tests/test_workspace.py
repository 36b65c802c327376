"""The colcon workspace: valid ROS 2 packages, real dependencies, a set-up that is idempotent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

from dp_testing.lint import WORKSPACE_ROOT

SRC = WORKSPACE_ROOT / "src"
PACKAGES = ["dp_msgs", "dp_policy", "dp_policy_node", "dp_recorder", "dp_sim", "dp_bringup"]
VENV_AMENT_INDEX = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
INSTALL = WORKSPACE_ROOT / "install"


def test_src_holds_exactly_the_packages_of_the_design() -> None:
    assert sorted(path.parent.name for path in SRC.glob("*/package.xml")) == sorted(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_package_xml_is_format_3_and_valid(name: str) -> None:
    package = parse_package(SRC / name)  # raises on any schema violation
    package.validate()
    assert package.package_format == 3
    assert package.name == name
    assert package.licenses and package.maintainers


@pytest.mark.parametrize("name", PACKAGES)
def test_every_ros_dependency_resolves(name: str) -> None:
    """Each dependency is a workspace package, a ROS package in the venv, or a system key."""
    package = parse_package(SRC / name)
    dependencies = {
        dependency.name
        for group in (
            package.build_depends,
            package.buildtool_depends,
            package.exec_depends,
            package.test_depends,
        )
        for dependency in group
    }
    # These exist only in full ROS 2 installs (see ENVIRONMENT.md); dp_bringup's launch files
    # use them there.
    full_install_only = {"launch", "launch_ros", "robot_state_publisher", "rviz2"}
    unresolved = [
        dependency
        for dependency in sorted(dependencies)
        if dependency not in PACKAGES
        and dependency not in full_install_only
        and not dependency.startswith("python3-")  # rosdep keys for Python libraries
        and not (VENV_AMENT_INDEX / dependency).exists()
    ]
    assert not unresolved, f"{name} depends on packages found nowhere: {unresolved}"


@pytest.mark.parametrize("name", [name for name in PACKAGES if name != "dp_msgs"])
def test_python_package_layout(name: str) -> None:
    root = SRC / name
    assert (root / "resource" / name).is_file(), "ament index marker missing"
    assert (root / "setup.cfg").is_file()
    setup_py = (root / "setup.py").read_text()
    assert f'PACKAGE_NAME = "{name}"' in setup_py
    # colcon silently falls back to unittest without a pytest test extra (ENVIRONMENT.md).
    assert 'extras_require={"test": ["pytest"]}' in setup_py
    assert (root / "test" / "test_lint.py").is_file()


@pytest.mark.parametrize("name", PACKAGES)
def test_package_is_built_into_the_install_space(name: str) -> None:
    marker = INSTALL / name / "share" / "ament_index" / "resource_index" / "packages" / name
    assert marker.is_file(), f"{name} is not in install/: run scripts/setup.sh"


def test_colcon_meta_names_only_workspace_packages() -> None:
    meta = json.loads((WORKSPACE_ROOT / "colcon.meta").read_text())
    assert set(meta["names"]) <= set(PACKAGES)


def test_requirements_are_pinned() -> None:
    for path in sorted((WORKSPACE_ROOT / "requirements").glob("*.txt")):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r "):
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][^\s]*", line), (
                    f"{path.name}: {line!r} is not pinned with =="
                )


def test_requirements_name_the_rmw_implementation() -> None:
    # rclpy does not pull in an rmw implementation; without it no node starts.
    assert "ros-kilted-rmw-fastrtps-cpp==" in (WORKSPACE_ROOT / "requirements/ros.txt").read_text()


def test_second_setup_run_does_no_work() -> None:
    """scripts/setup.sh twice in a row: the second run finds everything up to date."""

    def run_setup() -> str:
        return subprocess.run(
            [str(WORKSPACE_ROOT / "scripts" / "setup.sh")],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout

    run_setup()  # brings the workspace up to date if src/ changed since the last build
    second = run_setup()
    assert "requirements up to date" in second, second
    assert "workspace build up to date" in second, second
