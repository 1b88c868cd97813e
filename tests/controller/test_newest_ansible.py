"""The collection on the newest ansible-core (2.21), beside the host's 2.19.

ansible-core 2.21 needs Python >= 3.12 and the host's .venv runs 3.11, so these
checks run in a throwaway Debian 13 container (Python 3.13), `chatmail-controller-newest`,
with a venv from requirements-newest.txt (the `ansible` release that bundles 2.21). The
checkout is mounted read-only at /src: ansible.cfg and the symlink
.collections/ansible_collections/chatmail/relay -> ../../.. make it the collection there
as on the host. Debian's packages and PyPI's wheels are kept on the host
(/var/cache/chatmail-relay/{apt-archives,pip}/controller-newest), so a warm run downloads
nothing; after the setup the container leaves the Docker network: the checks reach
loopback only, never the example inventory's hosts.

The checks are the controller-side ones the host runs on 2.19: a syntax check of every
playbook, ansible-doc of every plugin and role, playbooks/settings.yml with good and bad
settings (tests/lint/test_settings.py's), the plugins' unit tests (tests/unit/plugins),
and the collection's build and install with the dependencies the `ansible` package bundles.
And one the host does not run: `ansible-test sanity` of 2.21, with the few exceptions of
tests/sanity/ignore-2.21.txt. It runs each sanity test in a venv of its own, with the
packages ansible-core pins for it; the setup keeps their wheels in the wheelhouse too.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Another name lets a second checkout (or a second suite) run beside this one.
NAME = os.environ.get("CHATMAIL_CONTROLLER_NAME", "chatmail-controller-newest")
IMAGE = "chatmail-relay/debian13-systemd:latest"
CACHE = Path("/var/cache/chatmail-relay")
APT_CACHE = CACHE / "apt-archives" / "controller-newest"
PIP_CACHE = CACHE / "pip" / "controller-newest"
# The host's trust store: pip in the container trusts what pip on the host trusts.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SRC = "/src"
VENV = "/opt/ansible-newest"
WHEELS = "/root/.cache/pip/wheelhouse"
SETUP_NOTE = "/root/setup-note"
# ansible-test takes a collection at a path ending in ansible_collections/NAMESPACE/NAME.
SANITY_COPY = "/tmp/sanity/ansible_collections/chatmail/relay"
# Where ansible-test looks for its pip bootstrap script before it downloads one.
ANSIBLE_TEST_CACHE = "/root/.ansible/test/cache"
GET_PIP = Path(__file__).with_name("get_pip_offline.py")
# ansible-test's pip pin for its venvs and the requirement files of its sanity tests.
SANITY_REQUIREMENTS = """
import json, pathlib, types
import ansible_test
from ansible_test._internal.python_requirements import get_venv_packages
folder = pathlib.Path(ansible_test.__file__).parent / "_data" / "requirements"
pip = get_venv_packages(types.SimpleNamespace(version=None))["pip"]
print(json.dumps({"pip": pip, "files": sorted(map(str, folder.glob("sanity.*.txt")))}))
"""
REQUIREMENTS = Path(__file__).with_name("requirements-newest.txt")
PINS = dict(
    line.split("==", 1)
    for line in REQUIREMENTS.read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/root",
    "ANSIBLE_CONFIG": f"{SRC}/ansible.cfg",
    "NO_COLOR": "1",
    "ANSIBLE_FORCE_COLOR": "0",
    "DEBIAN_FRONTEND": "noninteractive",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    # The checkout is read-only: hypothesis keeps its examples elsewhere.
    "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/hypothesis",
}
# ansible-core 2.21's own noise on every `ansible-doc -t role`, whatever the role:
# https://github.com/ansible/ansible/issues/85689 (internal collection without a version).
KNOWN_WARNINGS = re.compile(r"_internal/ansible_collections/ansible/_protomatter' does not have")

PLAYBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "playbooks").glob("*.yml"))
ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))
PLUGIN_TESTS = sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "tests/unit/plugins").rglob("test_*.py")
)


def documented_plugins() -> dict[str, list[str]]:
    """Each documented plugin type of plugins/ and its plugins' names.

    Filters and tests document each function in a YAML file beside the module holding
    them; other types document themselves. Actions run modules of their name;
    plugin_utils and module_utils are no plugins.
    """
    plugins: dict[str, list[str]] = {}
    for folder in sorted((ROOT / "plugins").iterdir()):
        if folder.name in ("action", "plugin_utils", "module_utils", "doc_fragments"):
            continue
        suffix = ".yml" if folder.name in ("filter", "test") else ".py"
        names = [p.stem for p in folder.glob(f"*{suffix}") if p.stem != "__init__"]
        kind = "module" if folder.name == "modules" else folder.name
        plugins[kind] = sorted(f"chatmail.relay.{name}" for name in names)
    return plugins


PLUGINS = documented_plugins()


def lint_module(name: str):
    """tests/lint/NAME.py, whose cases the host runs on 2.19 (tests/lint is no package)."""
    path = ROOT / "tests" / "lint" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lint_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BAD_SETTINGS = lint_module("test_settings").BAD_SETTINGS


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def run(
    *command: str, timeout: float = 300, workdir: str = SRC, **env: str | None
) -> subprocess.CompletedProcess[str]:
    """COMMAND in the container, in the checkout; stdout and stderr as one output.

    ENV adds variables to ENV's, or with None leaves one out.
    """
    variables = {**ENV, **env}
    options = [f"--env={key}={value}" for key, value in variables.items() if value is not None]
    return subprocess.run(
        ["docker", "exec", f"--workdir={workdir}", *options, NAME, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def report(command: tuple[str, ...] | list[str], result, why: str, lines: int = 60) -> str:
    tail = "\n".join(result.stdout.splitlines()[-lines:])
    return (
        f"{why}\n$ docker exec {NAME} {shlex.join(command)}   (exit {result.returncode}, "
        f"last {lines} lines)\n{tail}"
    )


def check(*command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """COMMAND must succeed in the container, without a warning Ansible has not to give."""
    result = run(*command, timeout=timeout)
    assert result.returncode == 0, report(command, result, "failed on ansible-core 2.21")
    assert not unexpected_warnings(result.stdout), report(
        command, result, f"warned on ansible-core 2.21: {unexpected_warnings(result.stdout)}"
    )
    return result


def unexpected_warnings(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if re.match(r"\[(DEPRECATION )?WARNING\]", line) and not KNOWN_WARNINGS.search(line)
    ]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def set_up() -> None:
    """Start the container, install Python and the pinned venv, then cut its network off."""

    pip_env: dict[str, str] = {}
    downloads = []  # what the setup fetched, for the summary: a warm run fetches nothing

    def step(why: str, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = run(*command, timeout=timeout, **pip_env)
        if result.returncode != 0:
            pytest.fail(report(command, result, f"setup of {NAME}: {why}"), pytrace=False)
        return result

    if docker("image", "inspect", IMAGE).returncode != 0:
        pytest.fail(f"no image {IMAGE}: scripts/bootstrap builds it", pytrace=False)
    docker("rm", "--force", NAME)
    for folder in (APT_CACHE, PIP_CACHE):
        folder.mkdir(parents=True, exist_ok=True)
    volumes = [
        f"{ROOT}:{SRC}:ro",
        # Debian 13's packages for this container only: apt locks its archive folder.
        f"{APT_CACHE}:/var/cache/apt/archives",
        f"{PIP_CACHE}:/root/.cache/pip",
    ]
    if HOST_CA.is_file():
        volumes.append(f"{HOST_CA}:/etc/ssl/certs/host-ca-certificates.crt:ro")
        pip_env["PIP_CERT"] = "/etc/ssl/certs/host-ca-certificates.crt"
    options = [f"--name={NAME}", f"--hostname={NAME}", *(f"--volume={v}" for v in volumes)]
    started = docker("run", "--detach", *options, IMAGE, "sleep", "infinity")
    if started.returncode != 0:
        pytest.fail(f"docker run {NAME}: {started.stderr}", pytrace=False)

    # The image's package lists may be older than the mirror: update them only then.
    packages = ("apt-get", "install", "-y", "-q", "--no-install-recommends")
    packages += ("python3", "python3-venv")
    # For ansible-test sanity: its shellcheck test, and git, by which it lists the files
    # of the collection's copy as it would in a checkout.
    packages += ("shellcheck", "git")
    result = run(*packages)
    if result.returncode != 0:
        step("apt-get update", "apt-get", "update", "-q")
        downloads.append("apt package lists")
        result = step("Debian 13's python3, python3-venv, shellcheck and git", *packages)
    fetched = re.search(r"^Need to get (\S+ \S+?)[/ ]", result.stdout, re.MULTILINE)
    if fetched and not fetched.group(1).startswith("0 "):
        downloads.append(f"{fetched.group(1)} of .debs")
    step("the venv", "python3", "-m", "venv", VENV)
    requirements = f"{SRC}/{REQUIREMENTS.relative_to(ROOT)}"
    # The wheels are kept on the host: a warm run installs without asking PyPI. Without
    # bytecode compilation at install: Python compiles what Ansible imports, once.
    install = (f"{VENV}/bin/pip", "install", "-q", "--no-compile", "--no-index",
               f"--find-links={WHEELS}", "-r", requirements)  # fmt: skip
    if run(*install).returncode != 0:
        step("the pinned wheels from PyPI", f"{VENV}/bin/pip", "download", "-q",
             "--only-binary=:all:", f"--dest={WHEELS}", "-r", requirements)  # fmt: skip
        step("the pinned requirements", *install)
        downloads.append("wheels from PyPI")
    step("pip check", f"{VENV}/bin/pip", "check")

    # ansible-test's sanity venvs: pip and the pinned packages, into the wheelhouse as well.
    pins = step("ansible-test's pins", f"{VENV}/bin/python", "-c", SANITY_REQUIREMENTS)
    sanity = json.loads(pins.stdout)
    wanted = [f"pip=={sanity['pip']}", *(f"-r{path}" for path in sanity["files"])]
    keep = (f"{VENV}/bin/pip", "download", "-q", "--only-binary=:all:", f"--dest={WHEELS}")
    if run(*keep, "--no-index", f"--find-links={WHEELS}", *wanted).returncode != 0:
        step("ansible-test's sanity wheels from PyPI", *keep, *wanted)
        downloads.append("ansible-test's sanity wheels from PyPI")
    get_pip = f"{ANSIBLE_TEST_CACHE}/get_pip_{sanity['pip'].replace('.', '_')}.py"
    bootstrap = f"mkdir -p {ANSIBLE_TEST_CACHE} && cp {SRC}/{GET_PIP.relative_to(ROOT)} {get_pip}"
    step("the offline pip bootstrap", "sh", "-c", bootstrap)
    # From here on every pip of the container, ansible-test's too, installs from the
    # wheelhouse only (ansible-test passes pip no PIP_* variables, so a config file).
    pip_conf = f"[global]\nno-index = true\nfind-links = {WHEELS}\n"
    step(
        "pip's offline configuration",
        "sh",
        "-c",
        f"printf %s {shlex.quote(pip_conf)} >/etc/pip.conf",
    )
    note = f"setup downloaded {', '.join(downloads)}" if downloads else "setup downloaded nothing"
    step("the setup's note", "sh", "-c", f"echo {shlex.quote(note)} >{SETUP_NOTE}")

    disconnected = docker("network", "disconnect", "bridge", NAME)
    networks = docker("inspect", "--format={{json .NetworkSettings.Networks}}", NAME).stdout
    if disconnected.returncode != 0 or json.loads(networks or '"unknown"'):
        pytest.fail(f"{NAME} is still on a network: {networks} {disconnected.stderr}")


@pytest.fixture(scope="module")
def controller():
    """The container, set up once however many pytest workers (or runs) use it.

    Each user holds a shared lock on a file for as long as it uses the container; the
    first sets it up, the last removes it. A crashed run's locks go with its processes.
    """
    lock = Path(tempfile.gettempdir()) / f"{NAME}.lock"
    users = Path(tempfile.gettempdir()) / f"{NAME}.users"
    with contextlib.ExitStack() as stack, locked(lock):
        use = stack.enter_context(users.open("a"))
        try:
            fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            first = True
        except BlockingIOError:
            first = False
        if first:
            try:
                set_up()
            except BaseException:
                docker("rm", "--force", NAME)
                raise
        else:
            mounts = json.loads(docker("inspect", "--format={{json .Mounts}}", NAME).stdout or "[]")
            source = next((m["Source"] for m in mounts if m["Destination"] == SRC), "")
            if source != str(ROOT):
                pytest.fail(f"{NAME} is in use by the checkout {source or '?'}", pytrace=False)
        fcntl.flock(use, fcntl.LOCK_SH)
        stack.pop_all()
    try:
        yield NAME
    finally:
        with locked(lock):
            try:
                fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                docker("rm", "--force", NAME)
            except BlockingIOError:
                pass
            finally:
                use.close()


def requirement_names(path: Path) -> dict[str, str]:
    """The packages of a requirements file by normalised name, each with its line."""
    names = {}
    for line in path.read_text().splitlines():
        if name := re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line.strip()):
            names[re.sub(r"[-_.]+", "-", name.group().lower())] = line.strip()
    return names


def test_the_pins_cover_the_collections_requirements():
    """The collection's controller packages are in the venv, at the host's versions."""
    pins = requirement_names(REQUIREMENTS)
    missing = sorted(set(requirement_names(ROOT / "requirements.txt")) - set(pins))
    assert not missing, f"{REQUIREMENTS.name} lacks requirements.txt's {missing}"
    host = requirement_names(ROOT / "requirements-dev.txt")
    differ = [
        f"{pins[name]} (host: {host[name]})"
        for name in sorted(set(pins) & set(host) - {"ansible", "ansible-core"})
        if pins[name] != host[name]
    ]
    assert not differ, (
        f"{REQUIREMENTS.name} pins other versions than requirements-dev.txt: {differ}"
    )


def test_ansible_core_is_the_newest(controller, record_property):
    result = check("ansible", "--version")
    version = result.stdout.splitlines()[0]
    python = re.search(r"python version = (\S+)", result.stdout)
    assert version == f"ansible [core {PINS['ansible-core']}]", result.stdout
    assert PINS["ansible-core"].startswith("2.21."), PINS["ansible-core"]
    setup = run("cat", SETUP_NOTE).stdout.strip()
    ran_on = f"{version}, Python {python.group(1) if python else '?'} (Debian 13); {setup}"
    record_property("ran_on", ran_on)
    print(ran_on)


def test_the_collection_is_the_checkout(controller):
    """Found as on the host: through ansible.cfg's collections_path and the symlink."""
    result = check("ansible-galaxy", "collection", "list", "chatmail.relay", "--format=json")
    found = json.loads(result.stdout[result.stdout.index("{") :])
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    checkout = {f"{SRC}/.collections/ansible_collections": {"chatmail.relay": {"version": version}}}
    assert found == checkout, result.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(controller, playbook):
    check("ansible-playbook", "-i", "inventories/example", "--syntax-check", playbook)


@pytest.mark.parametrize("kind", sorted(PLUGINS))
def test_ansible_doc_lists_every_plugin(controller, kind):
    """Each plugin under plugins/ is documented, and ansible-doc knows no other."""
    result = check("ansible-doc", "--list", "--json", "-t", kind, "chatmail.relay")
    listed = sorted(json.loads(result.stdout[result.stdout.index("{") :]))
    assert listed == PLUGINS[kind], report(("ansible-doc", "-l", "-t", kind), result, "")


@pytest.mark.parametrize(
    ("kind", "name"), [(kind, name) for kind, names in PLUGINS.items() for name in names]
)
def test_ansible_doc_of_each_plugin(controller, kind, name):
    command = ("ansible-doc", "-t", kind, name)
    result = check(*command)
    for section in (f"> {kind.upper()} {name}", "EXAMPLES:"):
        assert section in result.stdout, report(command, result, f"no {section!r}")


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_of_each_role(controller, role):
    command = ("ansible-doc", "-t", "role", f"chatmail.relay.{role}")
    result = check(*command)
    assert f"> ROLE: *chatmail.relay.{role}*" in result.stdout, report(command, result, "")
    assert "ENTRY POINT: *main*" in result.stdout, report(command, result, "no entry point main")


def settings(*variables: dict) -> tuple[tuple[str, ...], subprocess.CompletedProcess[str]]:
    command = ["ansible-playbook", "-i", "inventories/example"]
    for extra in variables:
        command += ["-e", json.dumps(extra)]
    command = (*command, "playbooks/settings.yml")
    return command, run(*command)


def test_the_example_inventory_passes_the_settings(controller):
    command, result = settings()
    assert result.returncode == 0, report(command, result, "the example inventory failed")
    assert "failed=0" in result.stdout, report(command, result, "")
    assert not unexpected_warnings(result.stdout), report(command, result, "warnings")


@pytest.mark.parametrize(
    ("variables", "message"),
    BAD_SETTINGS,
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_a_bad_setting_fails_naming_it(controller, variables, message):
    command, result = settings(variables)
    assert result.returncode != 0, report(command, result, f"{variables} passed")
    assert "fatal:" in result.stdout or "failed:" in result.stdout, report(command, result, "")
    assert message in result.stdout, report(command, result, f"no {message!r} in the output")


@pytest.mark.parametrize("tests", PLUGIN_TESTS, ids=lambda path: path.split("plugins/", 1)[1])
def test_plugin_unit_tests(controller, tests):
    command = ("python", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", tests)
    result = run(*command)
    assert result.returncode == 0, report(command, result, "plugin unit tests failed", lines=120)


def test_the_collection_installs_with_the_bundled_dependencies(controller):
    """As the README says: offline, the `ansible` package has the collections it needs."""
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    check("ansible-galaxy", "collection", "build", "--force", "--output-path=/tmp/build", SRC)
    tarball = f"/tmp/build/chatmail-relay-{galaxy['version']}.tar.gz"
    command = ("ansible-galaxy", "collection", "install", "--offline", "-p", "/tmp/installed",
               tarball)  # fmt: skip
    # Away from the checkout's ansible.cfg, where chatmail.relay counts as installed; into
    # the configured path (else ansible-galaxy warns it may be the `ansible` package's).
    result = run(*command, workdir="/tmp", ANSIBLE_CONFIG=None,
                 ANSIBLE_COLLECTIONS_PATH="/tmp/installed")  # fmt: skip
    assert result.returncode == 0, report(command, result, "the install failed")
    assert not unexpected_warnings(result.stdout), report(command, result, "warnings")
    installed = run("test", "-f", "/tmp/installed/ansible_collections/chatmail/relay/MANIFEST.json")
    assert installed.returncode == 0, report(command, result, "no MANIFEST.json installed")


def collection_files() -> bytes:
    """The checkout's files as ansible-test lists them in a git checkout, NUL-separated.

    Tracked and untracked ones but not ignored or deleted ones; no directories (git lists
    a directory that replaced a tracked symlink under the symlink's name). Nor .collections,
    the symlink by which the checkout is its own collection (ansible.cfg): the copy is one
    by its path, and ansible-test would refuse the symlink to a directory.
    """

    def git(*args: str) -> list[bytes]:
        command = ["git", "-C", str(ROOT), "ls-files", "-z", *args]
        listed = subprocess.run(command, capture_output=True, check=True).stdout
        return [path for path in listed.split(b"\0") if path]

    deleted = set(git("--deleted"))
    paths = [
        path
        for path in git("--cached", "--others", "--exclude-standard")
        if path not in deleted
        and not path.startswith(b".collections/")
        and not (ROOT / path.decode()).is_dir()
    ]
    return b"\0".join(paths)


def test_ansible_test_sanity(controller):
    """`ansible-test sanity` of ansible-core 2.21: clean, but for tests/sanity/ignore-2.21.txt.

    On a copy of the checkout (which is read-only here) at a collection's path, made a git
    repository so that ansible-test sees the files as it would in the checkout.
    """
    copy = (
        f"rm -rf {SANITY_COPY} && mkdir -p {SANITY_COPY}"
        f" && tar -C {SRC} --null -T - -cf - | tar -C {SANITY_COPY} -xf -"
        f" && git -C {SANITY_COPY} init -q"
    )
    copied = subprocess.run(
        ["docker", "exec", "-i", NAME, "sh", "-c", copy],
        input=collection_files(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert copied.returncode == 0, f"copying the collection failed: {copied.stderr.decode()}"
    command = ("ansible-test", "sanity", "--color=no")
    result = run(*command, timeout=900, workdir=SANITY_COPY, ANSIBLE_CONFIG=None)
    # Its findings, without the output of the pip installs around them.
    findings = [line for line in result.stdout.splitlines() if line.startswith(("ERROR", "FATAL"))]
    why = "ansible-test sanity failed:\n" + "\n".join(findings)
    assert result.returncode == 0, report(command, result, why, lines=10)
