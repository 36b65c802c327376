"""The Docker deployment (docker/): what can be checked without Docker.

Docker cannot build here, so these tests hold the structure in place: the Dockerfile and the
compose file parse, everything they copy is in the build context, the image installs the same
pinned requirement files as the tests' environment (and not the PyPI ROS wheels), the base
images are official ROS images pinned by tag (digest optional), the image runs as a non-root
user through an entrypoint that sources the workspace, and the policy service gets a GPU, the
DDS set-up and the data volume.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from dp_testing.lint import WORKSPACE_ROOT

DOCKER = WORKSPACE_ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
DOCKER_README = DOCKER / "README.md"
DOCKERIGNORE = WORKSPACE_ROOT / ".dockerignore"
REQUIREMENTS = WORKSPACE_ROOT / "requirements"
LAUNCH_DIR = WORKSPACE_ROOT / "src" / "dp_bringup" / "launch"

DEFAULT_COMMAND = ["ros2", "launch", "dp_bringup", "policy.launch.py"]
DISTROS = ["jazzy", "kilted"]
# An official ROS 2 image of a supported distro on Ubuntu 24.04, by its most specific tag, with
# an optional digest; no registry host (the image name is exactly "ros"), no "latest".
OFFICIAL_ROS_IMAGE = re.compile(
    r"ros:(?P<distro>[a-z]+)-ros-(?:base|core)-noble(?P<digest>@sha256:[0-9a-f]{64})?"
)
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COMMENT", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
    "HEALTHCHECK", "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip
DISCOVERY_RANGES = {"SUBNET", "LOCALHOST", "OFF", "SYSTEM_DEFAULT"}


# --- the Dockerfile, as stages ------------------------------------------------------------------


@dataclass
class Stage:
    image: str  # as written, before ARG substitution
    resolved_image: str  # after substitution of the build arguments
    name: str | None
    instructions: list[dict] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [item["value"] for item in self.instructions if item["instruction"] == instruction]


def parse_dockerfile(build_args: dict[str, str] | None = None) -> tuple[list[dict], list[Stage]]:
    """The instructions before the first FROM, and the stages."""
    parser = DockerfileParser(
        fileobj=io.BytesIO(DOCKERFILE.read_bytes()), build_args=build_args or {}
    )
    preamble: list[dict] = []
    stages: list[Stage] = []
    resolved = iter(parser.parent_images)
    for item in parser.structure:
        if item["instruction"] == "FROM":
            words = [word for word in item["value"].split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], next(resolved), name))
        elif stages:
            stages[-1].instructions.append(item)
        else:
            preamble.append(item)
    return preamble, stages


def external_images(stages: list[Stage]) -> list[str]:
    """The images that FROM pulls, leaving out earlier stages used as bases."""
    names = {stage.name for stage in stages}
    return [stage.resolved_image for stage in stages if stage.image not in names]


def preamble_args(preamble: list[dict]) -> dict[str, str | None]:
    args: dict[str, str | None] = {}
    for item in preamble:
        if item["instruction"] == "ARG":
            name, has_default, default = item["value"].partition("=")
            args[name.strip()] = default.strip() if has_default else None
    return args


def all_args() -> set[str]:
    return {
        item["value"].partition("=")[0].strip()
        for item in DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes())).structure
        if item["instruction"] == "ARG"
    }


def split_copy(value: str) -> tuple[dict[str, str], list[str], str]:
    """``COPY [--flag=value ...] src... dest`` (shell or JSON form): flags, sources, dest."""
    flags: dict[str, str] = {}
    rest = value.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, flag_value = flag[2:].partition("=")
        flags[key] = flag_value
        rest = rest.lstrip()
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    assert len(words) >= 2, f"COPY needs a source and a destination: {value!r}"
    return flags, words[:-1], words[-1]


def context_files(source: str) -> list[Path]:
    """The repository files that a COPY source names (the build context is the repository)."""
    matches = sorted(WORKSPACE_ROOT.glob(source)) if any(c in source for c in "*?[") else []
    paths = matches or [WORKSPACE_ROOT / source]
    return [path for path in paths if path.exists()]


@dataclass
class Run:
    command: str
    workdir: str
    copied: dict[str, Path]  # image path -> repository file, for what the stage copied so far


def walk_stage(stage: Stage) -> list[Run]:
    """The stage's RUN commands with their working directory and the context files copied."""
    workdir = "/"
    copied: dict[str, Path] = {}
    runs = []
    for item in stage.instructions:
        instruction, value = item["instruction"], item["value"]
        if instruction == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, value))
        elif instruction in {"COPY", "ADD"}:
            flags, sources, dest = split_copy(value)
            if "from" in flags:
                continue
            into_directory = dest.endswith("/") or len(sources) > 1
            dest = posixpath.normpath(posixpath.join(workdir, dest))
            for source in sources:
                for path in context_files(source):
                    if path.is_dir():
                        for file in path.rglob("*"):
                            if file.is_file():
                                relative = file.relative_to(path).as_posix()
                                copied[posixpath.join(dest, relative)] = file
                    else:
                        target = posixpath.join(dest, path.name) if into_directory else dest
                        copied[target] = path
        elif instruction == "RUN":
            runs.append(Run(value, workdir, dict(copied)))
    return runs


def shell_commands(command: str) -> list[list[str]]:
    """A RUN line as simple commands (split at ;, &&, || and |)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


PIP_OPTIONS_WITH_VALUE = {
    "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "--platform", "--python-version",
}  # fmt: skip


def pip_installs(command: str) -> list[tuple[list[str], list[str]]]:
    """For each ``pip install`` in a RUN line: its -r files and its other positional words."""
    installs = []
    for words in shell_commands(command):
        for start in range(len(words) - 1):
            if (
                posixpath.basename(words[start]) in {"pip", "pip3"}
                and words[start + 1] == "install"
            ):
                break
        else:
            continue
        requirement_files, positional = [], []
        rest = iter(words[start + 2 :])
        for word in rest:
            if word in {"-r", "--requirement"}:
                requirement_files.append(next(rest))
            elif word.startswith("--requirement="):
                requirement_files.append(word.partition("=")[2])
            elif word in PIP_OPTIONS_WITH_VALUE:
                next(rest)
            elif not word.startswith(("-", "$")):  # $: an option expanded from a build arg
                positional.append(word)
        installs.append((requirement_files, positional))
    return installs


def requirement_files_of_the_tests() -> set[Path]:
    """The requirement files of the tests' environment: those requirements/all.txt includes."""
    included = set()
    for line in (REQUIREMENTS / "all.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            included.add((REQUIREMENTS / line[3:].strip()).resolve())
    return included


def installed_requirement_files() -> dict[Path, str]:
    """Repository requirement files that the image installs, with the image path pip reads."""
    _, stages = parse_dockerfile()
    installed: dict[Path, str] = {}
    for stage in stages:
        for run in walk_stage(stage):
            for files, _ in pip_installs(run.command):
                for name in files:
                    image_path = posixpath.normpath(posixpath.join(run.workdir, name))
                    assert image_path in run.copied, (
                        f"pip installs {name} (in {run.workdir}), which no COPY before it brought "
                        "from the repository"
                    )
                    installed[run.copied[image_path].resolve()] = image_path
    return installed


# --- the Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_parses_into_a_multi_stage_build() -> None:
    preamble, stages = parse_dockerfile()
    assert {item["instruction"] for item in preamble} <= {"ARG", "COMMENT"}, (
        "only ARG may come before the first FROM"
    )
    assert len(stages) >= 2, "the image is a multi-stage build"
    names = [stage.name for stage in stages]
    assert all(names), "every stage is named, so that COPY --from says which"
    assert len(set(names)) == len(names), f"stage names repeat: {names}"
    for index, stage in enumerate(stages):
        for item in stage.instructions:
            assert item["instruction"] in INSTRUCTIONS, f"unknown instruction: {item['content']}"
            assert item["value"].strip(), f"empty instruction: {item['content']}"
            if item["instruction"] in {"CMD", "ENTRYPOINT", "SHELL"}:
                assert isinstance(json.loads(item["value"]), list), item["content"]
            if item["instruction"] == "COPY":
                flags, _, _ = split_copy(item["value"])
                if "from" in flags:
                    assert flags["from"] in names[:index], (
                        f"COPY --from={flags['from']} in stage {stage.name} names no earlier stage"
                    )


@pytest.mark.parametrize("distro", DISTROS)
def test_base_images_are_official_ros_images_pinned_by_tag(distro: str) -> None:
    _, stages = parse_dockerfile({"ROS_DISTRO": distro})
    images = external_images(stages)
    assert images
    for image in images:
        assert not image.endswith(":latest") and ":" in image, f"{image} is not pinned by tag"
        match = OFFICIAL_ROS_IMAGE.fullmatch(image)
        assert match, f"{image} is not an official ROS 2 image tag of the form ros:<distro>-..."
        assert match["distro"] == distro, f"ROS_DISTRO={distro} builds on {image}"


def test_jazzy_is_the_default_and_digests_can_pin_every_base_image() -> None:
    preamble, stages = parse_dockerfile()
    args = preamble_args(preamble)
    assert args.get("ROS_DISTRO") == "jazzy", "Jazzy, the current LTS, is the default"
    digest_args = sorted(name for name in args if name.endswith("_DIGEST"))
    assert digest_args, "an ARG for an optional base image digest"
    assert all(args[name] == "" for name in digest_args), "digests are optional: empty defaults"
    digest = "@sha256:" + "0123456789abcdef" * 4
    _, pinned = parse_dockerfile({name: digest for name in digest_args})
    for image in external_images(pinned):
        assert image.endswith(digest), f"{image}: no digest build argument reaches this FROM"
    assert all("@" not in image for image in external_images(stages))


def test_every_copy_source_is_a_repository_file_in_the_build_context() -> None:
    _, stages = parse_dockerfile()
    sources = []
    for stage in stages:
        for value in stage.values("COPY") + stage.values("ADD"):
            flags, stage_sources, _ = split_copy(value)
            if "from" not in flags:
                sources += stage_sources
    assert sources
    for source in sources:
        assert not re.match(r"[a-z]+://", source), f"{source}: the image copies only from the repo"
        assert context_files(source), f"COPY {source}: no such file in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: .dockerignore leaves it out"


def test_the_image_installs_the_requirement_files_of_the_tests_and_not_the_ros_wheels() -> None:
    installed = installed_requirement_files()
    tested = requirement_files_of_the_tests()
    torch, python, ros = (REQUIREMENTS / name for name in ("torch.txt", "python.txt", "ros.txt"))
    assert {torch.resolve(), python.resolve()} <= set(installed), (
        "the image installs requirements/torch.txt and requirements/python.txt"
    )
    for path in installed:
        assert path in tested, f"{path.name} is not one of the files requirements/all.txt includes"
    # ROS comes from the base image; the ros-kilted wheels would shadow it with another distro.
    assert ros.resolve() not in installed


def test_requirement_files_that_the_image_installs_can_be_read_there() -> None:
    """A nested ``-r`` in an installed file must have been copied into the image too."""
    _, stages = parse_dockerfile()
    copied = {path for stage in stages for run in walk_stage(stage) for path in run.copied}
    for path, image_path in installed_requirement_files().items():
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line.startswith(("-r ", "-c ")):
                nested = posixpath.normpath(
                    posixpath.join(posixpath.dirname(image_path), line[3:].strip())
                )
                assert nested in copied, f"{path.name} includes {line[3:]}, not copied"


def test_pip_in_the_image_installs_only_requirement_files() -> None:
    """Packages named in the Dockerfile would escape the pinned files the tests use."""
    _, stages = parse_dockerfile()
    installs = [
        install
        for stage in stages
        for run in walk_stage(stage)
        for install in pip_installs(run.command)
    ]
    assert installs
    for files, positional in installs:
        assert files, "pip install without -r"
        assert not positional, f"pip installs {positional}: add them to a requirements file"
    text = DOCKERFILE.read_text()
    assert "ros-kilted-" not in text and "requirements/ros.txt" not in text


def test_ros_dependencies_come_from_the_package_manifests() -> None:
    _, stages = parse_dockerfile()
    runs = " ".join(run.command for stage in stages for run in walk_stage(stage))
    assert "rosdep install --from-paths src --ignore-src" in runs
    # torch comes from requirements/torch.txt, with CUDA; Debian's python3-torch is a CPU build.
    assert re.search(r"--skip-keys[ =]\"?[^\"]*python3-torch", runs)
    assert "python3-torch" in runs.split("rosdep keys", 1)[-1], "runtime list skips it too"


def test_colcon_builds_the_workspace_with_the_venv_interpreter() -> None:
    """Console scripts get the shebang of colcon's interpreter: it must be the venv's (torch)."""
    _, stages = parse_dockerfile()
    venvs = {
        stage.name: match[1]
        for stage in stages
        for value in stage.values("ENV")
        if (match := re.search(r"VIRTUAL_ENV=(\S+)", value))
    }
    builds = [
        (stage.name, run.command)
        for stage in stages
        for run in walk_stage(stage)
        if "colcon build" in run.command
    ]
    assert len(builds) == 1, "one colcon build"
    stage_name, command = builds[0]
    assert stage_name in venvs, "the build stage has a venv"
    assert re.search(r'"?\$\{?VIRTUAL_ENV\}?/bin/python3?"? \S*colcon build', command), command
    assert "--metas colcon.meta" in command
    assert "--symlink-install" not in command, "the runtime stage copies the install space alone"


def test_runtime_stage_keeps_the_venv_and_install_space_where_they_were_built() -> None:
    """A venv is not relocatable, and the console scripts name its interpreter by path."""
    _, stages = parse_dockerfile()
    final = stages[-1]
    copies = [split_copy(value) for value in final.values("COPY")]
    from_stages = [(sources, dest) for flags, sources, dest in copies if "from" in flags]
    venv = next(v for v in final.values("ENV") if "VIRTUAL_ENV=" in v)
    venv_path = re.search(r"VIRTUAL_ENV=(\S+)", venv)[1]
    assert ([venv_path], venv_path) in from_stages, f"COPY --from=<build> {venv_path} {venv_path}"
    installs = [
        (sources[0], dest) for sources, dest in from_stages if sources[0].endswith("/install")
    ]
    assert installs, "the runtime stage copies the colcon install space from the build stage"
    assert all(source == dest for source, dest in installs), installs


def test_final_stage_runs_as_a_non_root_user() -> None:
    _, stages = parse_dockerfile()
    final = stages[-1]
    users = final.values("USER")
    assert users, "the final stage sets a USER"
    user = users[-1].split(":")[0].strip()
    assert user not in {"root", "0"}, f"the image runs as {user}"
    assert any("useradd" in run and user in run for run in final.values("RUN")), (
        f"the final stage creates the user {user}"
    )


def test_default_command_launches_the_policy_through_the_entrypoint() -> None:
    _, stages = parse_dockerfile()
    final = stages[-1]
    assert json.loads(final.values("CMD")[-1]) == DEFAULT_COMMAND
    entrypoint = json.loads(final.values("ENTRYPOINT")[-1])
    assert len(entrypoint) == 1
    copied = {
        dest: (flags, sources)
        for flags, sources, dest in map(split_copy, final.values("COPY"))
        if "from" not in flags
    }
    assert entrypoint[0] in copied, "the entrypoint is a file the final stage copies"
    flags, sources = copied[entrypoint[0]]
    assert sources == ["docker/entrypoint.sh"]
    # --chmod keeps it executable where a checkout lost the mode (core.fileMode=false).
    assert int(flags.get("chmod", "0"), 8) & 0o111 or os.access(ENTRYPOINT, os.X_OK)


# --- the entrypoint -----------------------------------------------------------------------------


def fake_setups(tmp_path: Path) -> dict[str, str]:
    """ROS and workspace setup scripts that record the order they were sourced in."""
    ros = tmp_path / "ros" / "setup.bash"
    workspace = tmp_path / "ws" / "install" / "setup.bash"
    for path, step in ((ros, "ros"), (workspace, "workspace")):
        path.parent.mkdir(parents=True)
        path.write_text(f'export DP_TEST_SOURCED="${{DP_TEST_SOURCED:+$DP_TEST_SOURCED }}{step}"\n')
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DP_ROS_SETUP": str(ros),
        "DP_WORKSPACE": str(workspace.parent.parent),
    }


def test_entrypoint_is_an_executable_bash_script() -> None:
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh must be executable (git mode)"
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True, timeout=30)
    text = ENTRYPOINT.read_text()
    assert "/opt/ros/${ROS_DISTRO}/setup.bash" in text
    assert "/install/setup.bash" in text


def test_entrypoint_sources_ros_then_the_workspace_then_runs_the_command(tmp_path: Path) -> None:
    script = 'printf "%s|%s|%s" "$DP_TEST_SOURCED" "$0" "$1"'
    result = subprocess.run(
        [str(ENTRYPOINT), "bash", "-c", script, "first", "second word"],
        env=fake_setups(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ros workspace|first|second word"


def test_entrypoint_refuses_to_run_without_the_workspace(tmp_path: Path) -> None:
    env = fake_setups(tmp_path)
    env["DP_WORKSPACE"] = str(tmp_path / "missing")
    marker = tmp_path / "ran"
    result = subprocess.run(
        [str(ENTRYPOINT), "touch", str(marker)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert str(tmp_path / "missing" / "install" / "setup.bash") in result.stderr
    assert not marker.exists(), "the command ran without its environment"


def test_entrypoint_sourced_by_a_shell_only_sets_up_the_environment(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", f'source "{ENTRYPOINT}" ignored-argument; echo "after:$DP_TEST_SOURCED"'],
        env=fake_setups(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "after:ros workspace\n"


# --- .dockerignore ------------------------------------------------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, regex) per .dockerignore line, with Docker's pattern syntax."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        regex, index = "", 0
        while index < len(pattern):
            char = pattern[index]
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
                continue
            if pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
                continue
            if char == "*":
                regex += "[^/]*"
            elif char == "?":
                regex += "[^/]"
            elif char == "[":
                end = pattern.index("]", index)
                regex, index = regex + pattern[index : end + 1], end + 1
                continue
            else:
                regex += re.escape(char)
            index += 1
        rules.append((include, re.compile(regex)))
    return rules


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: the last matching line wins,
    and a line matches a path when it matches the path or one of its parent directories."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    excluded = False
    for include, regex in dockerignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not include
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "build/dp_msgs/CMakeCache.txt",
        "install/setup.bash",
        "log/latest_build/events.log",
        "runs/pusht/events.out.tfevents",
        "data/demos/episode_0/episode_0_0.mcap",
        "bags/episode_0/metadata.yaml",
        "episode_0.mcap",
        "episode_0.db3",
        "checkpoints/pusht/model.safetensors",
        "src/dp_recorder/bags/episode_0/metadata.yaml",
        "src/dp_policy/test/episode_0_0.mcap",
        "src/dp_sim/episode_0.db3",
        "src/dp_policy/checkpoints/pusht/config.json",
        "src/dp_policy/runs/pusht/events.out.tfevents",
        "src/dp_policy/dp_policy/__pycache__/config.cpython-312.pyc",
        ".git/HEAD",
    ],
)
def test_dockerignore_keeps_local_environments_and_data_out(path: str) -> None:
    assert dockerignore_excludes(path), f"{path} would enter the build context"


def test_dockerignore_matcher_can_tell_included_from_excluded() -> None:
    assert not dockerignore_excludes("src/dp_msgs/package.xml")
    assert not dockerignore_excludes("requirements/torch.txt")


def test_dockerignore_keeps_every_tracked_file_the_dockerfile_copies() -> None:
    if not (WORKSPACE_ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    _, stages = parse_dockerfile()
    sources = [
        source
        for stage in stages
        for flags, stage_sources, _ in map(split_copy, stage.values("COPY"))
        if "from" not in flags
        for source in stage_sources
    ]
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *sources],
        cwd=WORKSPACE_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\0")
    tracked = [path for path in listed if path]
    assert tracked
    left_out = [path for path in tracked if dockerignore_excludes(path)]
    assert not left_out, f".dockerignore leaves out files the image needs: {left_out}"


# --- compose ------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def with_defaults(value: str) -> str:
    """Compose interpolation with no variable set: ${VAR:-default} and ${VAR-default} give the
    default, ${VAR} gives ''."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m[1] or "", value)


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))


@pytest.fixture(name="services")
def fixture_services() -> dict:
    services = compose()["services"]
    assert {"policy", "recorder"} <= set(services)
    return services


def test_compose_builds_the_image_from_the_repository(services: dict) -> None:
    for name, service in services.items():
        build = service["build"]
        context = (DOCKER / with_defaults(build["context"])).resolve()
        assert context == WORKSPACE_ROOT, f"{name}: the build context is the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        unknown = set(build.get("args", {})) - all_args()
        assert not unknown, f"{name}: build args the Dockerfile does not declare: {unknown}"
        distro = with_defaults(str(build["args"]["ROS_DISTRO"]))
        assert distro == "jazzy"
        assert with_defaults(service["image"]).endswith(f":{distro}")


def test_policy_service_reserves_an_nvidia_gpu(services: dict) -> None:
    devices = services["policy"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
        for device in devices
    ), devices


@pytest.mark.parametrize("name", ["policy", "recorder"])
def test_services_reach_the_robot_over_dds(services: dict, name: str) -> None:
    service = services[name]
    # Host networking for discovery and traffic, host IPC for Fast DDS shared memory.
    assert service.get("network_mode") == "host"
    assert service.get("ipc") == "host"
    environment = service["environment"]
    assert {"ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"} <= set(environment)
    assert 0 <= int(with_defaults(str(environment["ROS_DOMAIN_ID"]))) <= 232
    assert with_defaults(environment["ROS_AUTOMATIC_DISCOVERY_RANGE"]) in DISCOVERY_RANGES
    assert "ROS_LOCALHOST_ONLY" not in environment, "ignored by Kilted; use the discovery range"


@pytest.mark.parametrize("name", ["policy", "recorder"])
def test_services_mount_the_data_volume(services: dict, name: str) -> None:
    mounts = [
        volume
        for volume in services[name]["volumes"]
        if isinstance(volume, dict) and volume.get("target") == "/data"
    ]
    assert len(mounts) == 1, f"{name}: one volume at /data for checkpoints, bags and runs"
    source = (DOCKER / with_defaults(mounts[0]["source"])).resolve()
    assert source == WORKSPACE_ROOT / "data", "by default the repository's data/ directory"
    assert dockerignore_excludes("data"), "the data directory never enters the build context"


def test_checkpoints_and_bags_live_on_the_data_volume(services: dict) -> None:
    policy = [with_defaults(word) for word in services["policy"]["command"]]
    recorder = [with_defaults(word) for word in services["recorder"]["command"]]
    assert policy[: len(DEFAULT_COMMAND)] == DEFAULT_COMMAND, "the image's default command"
    checkpoint = [word.partition(":=")[2] for word in policy if word.startswith("checkpoint:=")]
    assert checkpoint and checkpoint[0].startswith("/data/checkpoints/")
    assert recorder[:3] == ["ros2", "launch", "dp_bringup"]
    outputs = [word.partition(":=")[2] for word in recorder if ":=" in word]
    assert outputs and all(path.startswith("/data/bags") for path in outputs)


def launch_files_named() -> list[tuple[str, list[str]]]:
    """(launch file, launch arguments given) for the ``ros2 launch dp_bringup`` commands."""
    _, stages = parse_dockerfile()
    commands = [json.loads(stages[-1].values("CMD")[-1])]
    commands += [service["command"] for service in compose()["services"].values()]
    named: dict[str, set[str]] = {}
    for command in commands:
        if command[:3] == ["ros2", "launch", "dp_bringup"]:
            arguments = named.setdefault(command[3], set())
            arguments.update(word.split(":=")[0] for word in command[4:])
    return [(launch_file, sorted(arguments)) for launch_file, arguments in sorted(named.items())]


@pytest.mark.parametrize(("launch_file", "arguments"), launch_files_named())
def test_launch_files_named_by_the_image_take_the_arguments_given(
    launch_file: str, arguments: list[str]
) -> None:
    path = LAUNCH_DIR / launch_file
    assert path.is_file(), f"docker/ runs src/dp_bringup/launch/{launch_file}, which is missing"
    text = path.read_text()
    for argument in arguments:
        assert re.search(rf"""["']{argument}["']""", text), (
            f"{launch_file} declares no launch argument {argument!r}, which docker/ passes"
        )


# --- documentation ------------------------------------------------------------------------------


def test_docker_readme_explains_build_run_record_and_train() -> None:
    text = DOCKER_README.read_text()
    headings = [
        line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("#")
    ]
    for topic in ("build", "run", "record", "train"):
        assert any(heading.startswith(topic) for heading in headings), f"no section on {topic}"
    assert "docker build -f docker/Dockerfile" in text
    assert "--build-arg ROS_DISTRO=kilted" in text
    assert "docker compose -f docker/compose.yaml" in text


def test_docker_readme_documents_every_knob() -> None:
    text = DOCKER_README.read_text()
    undocumented = sorted(
        name
        for name in compose_variables() | all_args()
        if name != "DEBIAN_FRONTEND" and name not in text
    )
    assert not undocumented, f"docker/README.md does not mention {undocumented}"
