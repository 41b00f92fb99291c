"""Run `ansible-test sanity` on the jetson_llm.fleet collection on a machine that reaches only the package index.

ansible-test gives each sanity test a virtual environment of its own (~/.ansible/test/venv, kept between runs)
and bootstraps pip into it by downloading https://ci-files.testing.ansible.com/ansible-test/get-pip-<version>.py.
Where that host is out of reach the bootstrap fails ("Download failed: <urlopen error ...>") and each test that
has requirements stops with "does not have pip available". ansible-test uses a script saved at
~/.ansible/test/cache/get_pip_<version>.py instead of downloading one (its error message says so).

This script saves a stand-in there: it installs pip from the wheel of that version, which this script fetches
from the package index with this environment's pip, as get-pip does from the copy it embeds. The stand-in also
writes the new venv's own pip.conf with this environment's PIP_* network settings (index, find-links, CA,
proxy): ansible-test runs pip with only HOME and PATH, so a CA or mirror given in PIP_CERT / PIP_INDEX_URL would
otherwise be lost. ansible-test then installs each test's pinned requirements from the index as usual.

ansible-test runs on a copy of the collection in a temporary ansible_collections/<namespace>/<name> tree, so its
tests/output stays out of the work tree. The virtual environments are prepared first (--prime-venvs) with
their pip logs kept back, shown only if that fails.

    python tests/tools/ansible_test_sanity.py [ansible-test sanity options, e.g. --test validate-modules]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections" / "ansible_collections" / "jetson_llm" / "fleet"
CACHE = Path.home() / ".ansible" / "test" / "cache"
MARK = "# stand-in written by tests/tools/ansible_test_sanity.py"
# pip's settings for reaching an index, as PIP_<NAME> variables; pip.conf spells them in lower case with dashes
NETWORK_SETTINGS = (
    "INDEX_URL",
    "EXTRA_INDEX_URL",
    "NO_INDEX",
    "FIND_LINKS",
    "CERT",
    "CLIENT_CERT",
    "TRUSTED_HOST",
    "PROXY",
    "TIMEOUT",
    "DEFAULT_TIMEOUT",
    "RETRIES",
)
STAND_IN = '''{mark}
"""Stand-in for get-pip-{version}.py: installs pip {version} from {wheel}, as get-pip does from its own copy."""

import sys

PIP_CONF = {pip_conf!r}

if PIP_CONF:
    # the venv's site configuration: ansible-test runs pip without the caller's PIP_* variables
    with open(sys.prefix + "/pip.conf", "w") as conf:
        conf.write(PIP_CONF)

sys.path.insert(0, {wheel!r})

from pip._internal.cli.main import main  # noqa: E402

# get-pip's own options; pip would reject them
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--no-index", "--find-links", {directory!r}, "--upgrade", "--force-reinstall", *args]))
'''


def pip_version() -> str:
    """The pip version ansible-test bootstraps into its virtual environments for this Python."""
    from ansible_test._internal.python_requirements import get_venv_packages

    python = SimpleNamespace(version=f"{sys.version_info.major}.{sys.version_info.minor}")
    return get_venv_packages(python)["pip"]


def pip_conf(environ: dict[str, str]) -> str:
    """A pip.conf with the PIP_* network settings of `environ` (and its HTTPS proxy); empty if it has none."""
    settings = {name.lower().replace("_", "-"): environ.get(f"PIP_{name}", "") for name in NETWORK_SETTINGS}
    settings = {key: value for key, value in settings.items() if value}
    proxy = environ.get("https_proxy") or environ.get("HTTPS_PROXY")
    if proxy and "proxy" not in settings:
        settings["proxy"] = proxy
    if not settings:
        return ""
    return "[global]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(settings.items()))


def ensure_get_pip(version: str, environ: dict[str, str]) -> None:
    """Save the pip wheel and the stand-in where ansible-test looks; a real get-pip saved there is left alone."""
    script = CACHE / f"get_pip_{version.replace('.', '_')}.py"
    if script.exists() and not script.read_text().startswith(MARK):
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = CACHE / f"pip-{version}-py3-none-any.whl"
    if not wheel.exists():
        download = ["download", "--quiet", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(CACHE)]
        subprocess.run([sys.executable, "-m", "pip", *download, f"pip=={version}"], check=True)
    text = STAND_IN.format(
        mark=MARK, version=version, wheel=str(wheel), directory=str(CACHE), pip_conf=pip_conf(environ)
    )
    if not script.exists() or script.read_text() != text:
        partial = script.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(script)


def main(argv: list[str]) -> int:
    ensure_get_pip(pip_version(), dict(os.environ))
    ansible_test = Path(sys.executable).parent / "ansible-test"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = {**os.environ, "PATH": f"{ansible_test.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    with tempfile.TemporaryDirectory(prefix="ansible-test-sanity-") as tmp:
        root = Path(tmp) / "ansible_collections" / COLLECTION.parent.name / COLLECTION.name
        shutil.copytree(COLLECTION, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "output"))
        command = [str(ansible_test), "sanity", "--color", "no", "--python", python, *argv]
        prime = subprocess.run(
            [*command, "--prime-venvs"], cwd=root, env=env, capture_output=True, text=True, check=False
        )
        if prime.returncode != 0:
            print(f"$ {' '.join(command)} --prime-venvs\n{prime.stdout}{prime.stderr}", file=sys.stderr)
            return prime.returncode
        return subprocess.run(command, cwd=root, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
