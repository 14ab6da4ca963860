"""The container images: Dockerfile.server, Dockerfile.adapter, their locks and build context.

There is no Docker engine here, so the images are checked in three ways:
- statically: hadolint, one pinned base, the runtime stage's contract (numeric non-root user,
  tini then `pushscale` as the entrypoint, the ports the programs listen on, only the venv
  copied in);
- the locks (requirements/*.lock, compiled from requirements/*.in) against pyproject.toml;
- by replaying each Dockerfile's builder stage (its ENV, WORKDIR, COPY through .dockerignore,
  and RUN lines, with /opt and /src moved under a temporary directory) with this machine's
  Python 3.11, then running the programs from the virtualenv it made: every module they import
  must import, both programs must serve together, and nothing but the lock may be installed.

The replay reuses pip's cache (the one scripts/setup fills) instead of the Dockerfiles'
PIP_NO_CACHE_DIR, so a warm run takes seconds per image; the two images build concurrently.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from adapter.controller.settings import ControllerSettings
from adapter.settings import AdapterSettings
from pushserver.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("server", "adapter")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = {
    canonicalize_name(Requirement(r).name): r for r in PYPROJECT["project"]["dependencies"]
}
# Runtime dependencies that no image carries, and why.
IN_NO_IMAGE = {"matplotlib": "only `pushscale simulate` draws; no image runs it"}
# The programs each image runs, and the modules (packages: every module in them) they may
# import; `pushscale simulate` and `pushscale demo` are for laptops and are in no image.
PROGRAMS = {"server": ["server"], "adapter": ["adapter", "controller"]}
_ENTRY = ["pushscale.cli", "pushkit"]
MODULES = {"server": [*_ENTRY, "pushserver"], "adapter": [*_ENTRY, "adapter"]}
SKIPPED_MODULES = {"server": [], "adapter": ["adapter.simulator"]}
BUILD_TOOLS = {"pip", "setuptools", "wheel", "build", "uv", "pip-tools"}


# -- reading Dockerfiles, locks and .dockerignore ---------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def stages(image: str) -> list[Stage]:
    """The stages of Dockerfile.<image>: continuation lines joined, comment lines dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / f"Dockerfile.{image}").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            logical.append(pending)
            pending = ""
    found: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            base, _, name = args.partition(" AS ")
            found.append(Stage(base.strip(), name.strip(), ()))
        else:
            last = found[-1]
            step = Instruction(keyword.upper(), args.strip())
            found[-1] = Stage(last.base, last.name, (*last.instructions, step))
    return found


def lock(name: str) -> dict[str, str]:
    """requirements/<name>.lock as {canonical name: pinned version}; every pin has a hash."""
    text = (ROOT / "requirements" / f"{name}.lock").read_text()
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=\S)", text):
        if entry.startswith("#") or not entry.strip():
            continue
        requirement = entry.split("\\")[0].strip()
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[^\s;]+", requirement), f"not a pin: {requirement}"
        assert "--hash=sha256:" in entry, f"{name}.lock: {requirement} has no hash"
        package, version = requirement.split("==")
        pins[canonicalize_name(package)] = version
    return pins


def lock_roots(name: str) -> set[str]:
    """The packages requirements/<name>.lock says it took from requirements/<name>.in."""
    text = (ROOT / "requirements" / f"{name}.lock").read_text()
    roots: set[str] = set()
    for entry in re.split(r"\n(?=\S)", text):
        if f"-r requirements/{name}.in" in entry:
            roots.add(canonicalize_name(entry.split("==")[0]))
    return roots


def inputs(name: str) -> list[Requirement]:
    lines = (ROOT / "requirements" / f"{name}.in").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def _pattern(glob: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\*\*/?|\*|\?|\[[^\]]*\])", glob.strip("/")):
        if part.startswith("**"):
            out += "(?:.*/)?" if part.endswith("/") else ".*"
        elif part == "*":
            out += "[^/]*"
        elif part == "?":
            out += "[^/]"
        elif part.startswith("["):
            out += part
        else:
            out += re.escape(part)
    return re.compile(out)


def dockerignored(relative: str) -> bool:
    """.dockerignore as Docker reads it: the last matching rule wins, and a rule that matches
    a directory matches everything under it."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.lstrip("!"))))
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


# -- static checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_passes(image: str) -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", f"Dockerfile.{image}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_starts_from_one_pinned_slim_base() -> None:
    bases = {stage.base for image in IMAGES for stage in stages(image)}
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    for image in IMAGES:
        assert [stage.name for stage in stages(image)] == ["builder", "runtime"]
        version = base.split(":")[1].split("-")[0]
        label = f'org.opencontainers.image.base.name="docker.io/library/python:{version}-'
        assert label in " ".join(stages(image)[1].all("LABEL"))


def test_locks_are_compiled_for_the_images_python() -> None:
    version = stages("server")[0].base.split(":")[1].split("-")[0]
    for name in (*IMAGES, "build"):
        header = (ROOT / "requirements" / f"{name}.lock").read_text().splitlines()[1]
        assert f"--python-version {version} " in header, header
        assert "--generate-hashes" in header, header


@pytest.mark.parametrize("image", IMAGES)
def test_runtime_stage_runs_the_program_unprivileged_under_tini(image: str) -> None:
    runtime = stages(image)[-1]
    (user,) = runtime.all("USER")
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0 and gid != 0, "runAsNonRoot needs a numeric, non-zero UID"
    (entrypoint,) = (json.loads(args) for args in runtime.all("ENTRYPOINT"))
    cmd = [json.loads(args) for args in runtime.all("CMD")]
    if image == "server":
        assert (entrypoint, cmd) == (["tini", "--", "pushscale", "server"], [])
    else:
        assert (entrypoint, cmd) == (["tini", "--", "pushscale"], [["adapter"]])
    assert runtime.all("COPY") == ["--from=builder /opt/pushscale /opt/pushscale"]
    environment = " ".join(runtime.all("ENV"))
    for setting in ("PATH=/opt/pushscale/bin:", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert setting in environment
    (run,) = runtime.all("RUN")
    assert "pip install" not in run and "build-essential" not in run
    assert "pip uninstall --yes --no-cache-dir pip setuptools wheel" in run
    assert not runtime.all("HEALTHCHECK"), "Kubernetes ignores HEALTHCHECK; probes do its job"


def _exposed(image: str) -> set[int]:
    ports: set[int] = set()
    for args in stages(image)[-1].all("EXPOSE"):
        for item in args.split():
            low, _, high = item.partition("-")
            ports.update(range(int(low), int(high or low) + 1))
    return ports


def test_exposed_ports_are_the_programs_defaults() -> None:
    server = ServerSettings()
    metrics = range(server.metrics_port, server.metrics_port + server.workers)
    assert _exposed("server") == {server.port, *metrics}
    assert _exposed("adapter") == {AdapterSettings().secure_port, ControllerSettings().metrics_port}


def test_build_context_holds_the_source_and_nothing_private() -> None:
    for image in IMAGES:
        for args in stages(image)[0].all("COPY"):
            for source in args.split()[:-1]:
                assert not dockerignored(source.rstrip("/")), f"{source} is not in the context"
    for private in (".venv/bin/python", ".git/config", ".run/publish-token", ".cache/pip.log",
                    "tests/conftest.py", "requirements/server.in", "pushserver/__pycache__/x.pyc",
                    "adapter/controller/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert dockerignored(private), private


# -- the locks against pyproject.toml -------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_lock_inputs_are_pyprojects_lines(image: str) -> None:
    for requirement in inputs(image):
        name = canonicalize_name(requirement.name)
        assert name in DEPENDENCIES, f"{image}.in: {name} is not a dependency in pyproject.toml"
        assert requirement == Requirement(DEPENDENCIES[name]), f"{image}.in differs: {name}"


def test_every_runtime_dependency_is_in_an_image() -> None:
    carried = {canonicalize_name(r.name) for image in IMAGES for r in inputs(image)}
    assert set(DEPENDENCIES) - carried == set(IN_NO_IMAGE)
    for name in IN_NO_IMAGE:
        assert all(name not in lock(image) for image in IMAGES), f"{name} in an image"


@pytest.mark.parametrize("image", [*IMAGES, "build"])
def test_lock_pins_every_input_within_its_range(image: str) -> None:
    pins = lock(image)
    wanted = inputs(image)
    assert lock_roots(image) == {canonicalize_name(r.name) for r in wanted}, "lock is stale"
    for requirement in wanted:
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{image}.lock lacks {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_build_lock_is_pyprojects_build_backend() -> None:
    requires = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    assert inputs("build") == requires


def test_both_images_pin_shared_packages_alike() -> None:
    server, adapter = lock("server"), lock("adapter")
    shared = server.keys() & adapter.keys()
    assert {n: (server[n], adapter[n]) for n in shared if server[n] != adapter[n]} == {}


# -- the builder stages replayed --------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "pushscale"

    def python(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The image's interpreter, isolated from this checkout (-I: no cwd, no PYTHON*)."""
        return subprocess.run(
            [str(self.venv / "bin" / "python"), "-I", *args],
            cwd=self.root, capture_output=True, text=True, timeout=120, env=_clean_env(),
        )  # fmt: skip

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The builder's pip (the image has none), pointed at the image's venv."""
        build = self.root / "opt" / "build" / "bin" / "python"
        python = str(self.venv / "bin" / "python")
        return subprocess.run(
            [str(build), "-m", "pip", "--python", python, *args],
            cwd=self.root, capture_output=True, text=True, timeout=120, env=_clean_env(),
        )  # fmt: skip


def _clean_env() -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PUSHSCALE")}


# The builder's absolute paths (asserted to be the only ones), moved under the replay's root.
_ROOTS = re.compile(r"(?<![\w./-])/(opt|src)(?=/|\s|$)")
_OTHER_ROOTS = re.compile(r"(?<![\w./-])/(?!opt\b|src\b)\w")


def _rebase(text: str, root: Path) -> str:
    return _ROOTS.sub(lambda match: f"{root}/{match[1]}", text)


def _copy(args: str, root: Path, cwd: Path) -> None:
    *sources, target = shlex.split(args)
    assert not any(s.startswith("--") for s in sources), f"builder COPY takes the context: {args}"
    dest = cwd / _rebase(target, root)
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():  # like Docker: the directory's contents, through .dockerignore
            for path in sorted(origin.rglob("*")):
                if path.is_file() and not dockerignored(path.relative_to(ROOT).as_posix()):
                    copied = dest / path.relative_to(origin)
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copied)
        else:
            assert not dockerignored(source), f"{source} is left out by .dockerignore"
            into = dest / origin.name if target.endswith("/") else dest
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)


def replay_builder(image: str, root: Path) -> Built:
    """Run the builder stage of Dockerfile.<image> with /opt and /src under `root`."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    # The image's `python` is a plain CPython 3.11; here, the one this test's venv came from.
    (bin_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = _clean_env()
    # The image has no pip configuration; this machine's (constraints, find-links) stays out.
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PIP_CONFIG_FILE=os.devnull)
    cwd, log = root, []
    for step in stages(image)[0].instructions:
        assert not _OTHER_ROOTS.search(step.args), f"only /opt and /src are replayed: {step}"
        if step.keyword == "ENV":
            for pair in shlex.split(step.args):
                key, _, value = pair.partition("=")
                if key != "PIP_NO_CACHE_DIR":  # the replay keeps pip's cache (module docstring)
                    env[key] = value
        elif step.keyword == "WORKDIR":
            cwd = Path(_rebase(step.args, root))
            cwd.mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            _copy(step.args, root, cwd)
        elif step.keyword == "RUN":
            command = _rebase(step.args, root)
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=cwd, env=env, capture_output=True, text=True, timeout=540,
            )  # fmt: skip
            log.append(f"$ {command}\n{result.stdout}{result.stderr}")
            assert result.returncode == 0, "\n".join(log)
        else:
            raise AssertionError(f"the replay does not know {step.keyword}: teach it first")
    return Built(root)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built | BaseException]:
    """Both builder stages, replayed at once (two cores); a failure is kept for its image."""
    results: dict[str, Built | BaseException] = {}
    with ThreadPoolExecutor(len(IMAGES)) as pool:
        futures = {i: pool.submit(replay_builder, i, tmp_path_factory.mktemp(i)) for i in IMAGES}
        for image, future in futures.items():
            try:
                results[image] = future.result()
            except BaseException as exc:
                results[image] = exc
    return results


def _image(built: dict[str, Built | BaseException], image: str) -> Built:
    result = built[image]
    if isinstance(result, BaseException):
        raise result
    return result


# Whichever replay test runs first pays for both builds (a cold pip cache downloads ~60 wheels).
slow = pytest.mark.slow
build_timeout = pytest.mark.timeout(600)


@slow
@build_timeout
@pytest.mark.parametrize("image", IMAGES)
def test_image_venv_holds_the_lock_and_no_build_tools(
    built: dict[str, Built | BaseException], image: str
) -> None:
    venv = _image(built, image)
    listing = venv.python(
        "-c", "import importlib.metadata as m; print(*(d.name for d in m.distributions()))"
    )
    assert listing.returncode == 0, listing.stderr
    installed = {canonicalize_name(name) for name in listing.stdout.split()}
    assert not installed & BUILD_TOOLS
    assert not installed & set(IN_NO_IMAGE)
    assert installed == {*lock(image), "pushscale"}
    scripts = {path.name for path in (venv.venv / "bin").iterdir()}
    assert not {s for s in scripts if s.startswith(("pip", "easy_install", "wheel"))}, scripts


@slow
@build_timeout
@pytest.mark.parametrize("image", IMAGES)
def test_image_venv_satisfies_every_requirement(
    built: dict[str, Built | BaseException], image: str
) -> None:
    """pip check, but for pushscale's own requirements that this image leaves out on purpose
    (pyproject.toml has one dependency list for all programs)."""
    left_out = set(DEPENDENCIES) - {canonicalize_name(r.name) for r in inputs(image)}
    check = _image(built, image).pip("check")
    problems = [
        line
        for line in check.stdout.splitlines()
        if line.strip() and not line.startswith("No broken requirements")
        if not (
            (found := re.match(r"pushscale \S+ requires (\S+), which is not installed", line))
            and canonicalize_name(found[1]) in left_out
        )
    ]
    assert problems == [], check.stdout + check.stderr


@slow
@build_timeout
@pytest.mark.parametrize("image", IMAGES)
def test_every_module_the_programs_need_imports(
    built: dict[str, Built | BaseException], image: str
) -> None:
    probe = """if True:
        import importlib, importlib.util, json, sys
        from pathlib import Path
        wanted, skipped = json.loads(sys.argv[1]), json.loads(sys.argv[2])
        failed, imported, files = {}, [], {}
        for top in wanted:
            spec = importlib.util.find_spec(top)
            names = [top]
            if spec.submodule_search_locations:
                base = Path(spec.origin).parent
                for path in sorted(base.rglob("*.py")):
                    parts = path.relative_to(base.parent).with_suffix("").parts
                    if parts[-1] != "__main__":
                        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            for name in names:
                if any((name + ".").startswith(s + ".") for s in skipped):
                    continue
                try:
                    importlib.import_module(name)
                    imported.append(name)
                except BaseException as exc:
                    failed[name] = repr(exc)
            files[top] = getattr(sys.modules.get(top), "__file__", None)
        print(json.dumps({"failed": failed, "imported": imported, "files": files}))
    """
    venv = _image(built, image)
    run = venv.python("-c", probe, json.dumps(MODULES[image]), json.dumps(SKIPPED_MODULES[image]))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["failed"] == {}
    assert all(str(path).startswith(str(venv.venv)) for path in report["files"].values()), report
    needed = {"server": {"pushserver.worker", "pushserver.supervisor", "pushserver.cli"},
              "adapter": {"adapter.server", "adapter.tls", "adapter.controller.cli"}}  # fmt: skip
    assert needed[image] <= set(report["imported"])
    assert venv.python("-c", "import matplotlib").returncode != 0


@slow
@build_timeout
@pytest.mark.parametrize("image", IMAGES)
def test_the_images_programs_answer_help(
    built: dict[str, Built | BaseException], image: str
) -> None:
    venv = _image(built, image)
    for program in PROGRAMS[image]:
        run = subprocess.run(
            [str(venv.venv / "bin" / "pushscale"), program, "--help"],
            cwd=venv.root, capture_output=True, text=True, timeout=60, env=_clean_env(),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert f"usage: pushscale {program}" in run.stdout


def _await_ready(process: subprocess.Popen[bytes], ready: Path, log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not ready in 60 s:\n{log.read_text()}"
        time.sleep(0.05)
    return dict(json.loads(ready.read_text()))


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@slow
@build_timeout
def test_the_two_images_serve_together(
    built: dict[str, Built | BaseException],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """The server image's venv runs a pod, the adapter image's venv serves its count over
    TLS with a self-signed pair, and SIGTERM stops both with exit code 0."""

    def start(image: str, args: list[str]) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
        log = tmp_path / f"{image}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(_image(built, image).venv / "bin" / "pushscale"), *args,
                 "--ready-file", str(tmp_path / f"{image}.json")],
                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=_clean_env(),
            )  # fmt: skip
        processes.append(process)
        return process, _await_ready(process, tmp_path / f"{image}.json", log)

    server, pod = start("server", [
        "server", "--workers", "1", "--host", "127.0.0.1", "--port", "0",
        "--metrics-port", "0", "--pod-name", "push-0", "--drain-seconds", "0.5",
    ])  # fmt: skip
    metrics_ports = pod["metrics_ports"]
    assert isinstance(metrics_ports, list)
    pod_entry: dict[str, object] = {"namespace": "live", "name": "push-0", "workers": 1}
    pod_entry.update(labels={"app": "push"}, ip="127.0.0.1", metricsPort=metrics_ports[0])
    inventory = {"pods": [pod_entry]}
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump(inventory))
    certs = tmp_path / "certs"
    adapter, api = start("adapter", [
        "adapter", "--secure-port", "0", "--bind-address", "127.0.0.1",
        "--cert-dir", str(certs), "--static-pods", str(tmp_path / "pods.yaml"),
        "--authentication-skip",
    ])  # fmt: skip

    trust = ssl.create_default_context(cafile=str(certs / "apiserver.crt"))
    url = (
        f"https://localhost:{api['port']}/apis/custom.metrics.k8s.io/v1beta2"
        "/namespaces/live/pods/*/socket_io_connected"
    )
    deadline = time.monotonic() + 20
    while (answer := httpx.get(url, verify=trust, timeout=5)).status_code == 503:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [(i["describedObject"]["name"], i["value"]) for i in items] == [("push-0", "0")]

    assert _stop(adapter) == 0, (tmp_path / "adapter.log").read_text()
    assert _stop(server) == 0, (tmp_path / "server.log").read_text()
