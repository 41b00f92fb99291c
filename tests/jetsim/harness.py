"""jetsim: a fleet of emulated Jetson Orin NX hosts as privileged systemd containers.

Test fixture only. Layout on the machine running it (all overridable by environment):
- JETSIM_CACHE_DIR (default ~/.cache/jetson-llm-fleet/jetsim): rootfs tarballs, debootstrap's .deb cache,
  the private dockerd's data-root, the SSH key, the fleet state (inventory, known_hosts).
- JETSIM_RUN_DIR (default /run/jetson-llm-fleet-jetsim): the private dockerd's socket, pid file, exec-root.
Network safety: every address lives in 10.203.0.0/16; a blackhole route for it is added before any
network exists, the host network is --internal, and no connection is attempted before the host's
bridge route is in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import variants  # noqa: E402

REPO = HERE.parents[1]
CACHE = Path(os.environ.get("JETSIM_CACHE_DIR") or Path.home() / ".cache/jetson-llm-fleet/jetsim")
RUN_DIR = Path(os.environ.get("JETSIM_RUN_DIR") or "/run/jetson-llm-fleet-jetsim")
# Several fleets may coexist (one per developer task): JETSIM_FLEET names one, JETSIM_SUBNET_INDEX (1-99)
# gives it the network 10.203.<index>.0/24.
FLEET = os.environ.get("JETSIM_FLEET") or "jetsim"
_INDEX = int(os.environ.get("JETSIM_SUBNET_INDEX") or 1)
STATE = Path(os.environ.get("JETSIM_STATE_DIR") or CACHE / ("fleet" if FLEET == "jetsim" else f"fleet-{FLEET}"))
RESERVED = ipaddress.ip_network("10.203.0.0/16")
SUBNET = ipaddress.ip_network(f"10.203.{_INDEX}.0/24")
NETWORK = f"{FLEET}-net"
BRIDGE = "jetsim0" if _INDEX == 1 else f"jetsim{_INDEX}"
LABEL = f"jetsim.fleet={FLEET}"
KEPT_LABEL = f"jetsim.kept={FLEET}"  # the build host's Docker data: outlives the fleet (not removed by down)
ADMIN_USER = "jetson"
SUITE = "bookworm"
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "python3-apt",
    "iproute2", "iptables", "docker.io", "procps", "ca-certificates", "less", "curl", "kmod",
    # What a site's package mirror serves (jetsim hosts have no internet): the fleet registry (CNCF distribution)
    # and htpasswd for its users, node exporter and Prometheus for monitoring. Installed but disabled in the image
    # (tests/jetsim/image/Dockerfile): the roles enable them where the inventory puts them.
    "docker-registry", "apache2-utils", "prometheus-node-exporter", "prometheus",
]  # fmt: skip
RECIPE_VERSION = 1
BOOT_TIMEOUT_S = 180


class JetsimError(RuntimeError):
    """A failure with a message meant for the person running jetsim."""


def log(message: str) -> None:
    print(f"jetsim: {message}", file=sys.stderr, flush=True)


def sh(*args: str, check: bool = True, env: dict[str, str] | None = None, **kw: object) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise JetsimError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return str(proc.stdout)


# ---------------------------------------------------------------------------------------------- network


def ensure_blackhole() -> None:
    """Route the whole reserved range into a blackhole before any test network exists."""
    sh("ip", "route", "replace", "blackhole", str(RESERVED))


def route_ready(address: str) -> bool:
    out = sh("ip", "route", "get", address, check=False)
    return f"dev {BRIDGE}" in out and "blackhole" not in out and "unreachable" not in out


# ---------------------------------------------------------------------------------------------- docker


@dataclass
class Docker:
    host: str
    runtime: str | None = None
    private: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def __call__(self, *args: str, check: bool = True, input: str | bytes | None = None) -> str:
        binary = isinstance(input, bytes)
        proc = subprocess.run(["docker", *args], capture_output=True, text=not binary, input=input, env=self.env)
        out = proc.stdout.decode() if binary else proc.stdout
        err = proc.stderr.decode() if binary else proc.stderr
        if check and proc.returncode != 0:
            raise JetsimError(f"docker {' '.join(args[:3])} ... failed: {err.strip() or out.strip()}")
        return str(out)

    def ok(self, *args: str) -> bool:
        return subprocess.run(["docker", *args], capture_output=True, env=self.env).returncode == 0


def ensure_system_packages() -> None:
    missing = [tool for tool in ("dockerd", "debootstrap", "iptables") if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise JetsimError(f"missing {', '.join(missing)}: run as root or apt-get install docker.io debootstrap")
    log(f"installing docker.io debootstrap iptables (missing: {', '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sh("apt-get", "update", "-qq", env=env)
    sh("apt-get", "install", "-y", "-qq", "docker.io", "debootstrap", "iptables", env=env)


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"dockerd" in cmdline else None


def _process_gone(pid: int) -> bool:
    """True once pid has exited; reaps it when it is our child (a dockerd this process started)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, seconds: float) -> bool:
    """Wait up to seconds for pid to exit; True when it did."""
    deadline = time.monotonic() + seconds
    while not _process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _remove_stale_links() -> None:
    """Interfaces left by a killed private dockerd: veths enslaved to the jetsim bridges, and the bridges."""
    links = json.loads(sh("ip", "-j", "link", "show", check=False) or "[]")
    for link in links:
        name, master = link.get("ifname", ""), link.get("master", "")
        if master.startswith("jetsim") and name.startswith("veth"):
            subprocess.run(["ip", "link", "delete", name], capture_output=True)
    for link in links:
        if link.get("ifname", "").startswith("jetsim") and link.get("link_type") == "ether":
            subprocess.run(["ip", "link", "delete", link["ifname"]], capture_output=True)


def _unmount_under(*roots: Path) -> None:
    """Lazily unmount leftovers (overlay, netns, shm) of a dockerd that was killed."""
    prefixes = tuple(str(root) + "/" for root in roots)
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefixes):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _daemon_config() -> dict[str, object]:
    wrapper = CACHE / "bin/jetsim-runc"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "runc-wrapper", wrapper)
    wrapper.chmod(0o755)
    return {
        "bip": "10.203.0.1/24",
        "default-address-pools": [{"base": "10.203.128.0/17", "size": 24}],
        "data-root": str(CACHE / "docker"),
        "exec-root": str(RUN_DIR / "exec"),
        "pidfile": str(RUN_DIR / "docker.pid"),
        "hosts": [f"unix://{RUN_DIR / 'docker.sock'}"],
        "storage-driver": "overlay2",
        "runtimes": {"jetsim-runc": {"path": str(wrapper)}},
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
    }


def ensure_daemon() -> Docker:
    """Use $JETSIM_DOCKER_HOST or a running system dockerd; otherwise start a private one."""
    if os.environ.get("JETSIM_DOCKER_HOST"):
        return Docker(os.environ["JETSIM_DOCKER_HOST"])
    system = Docker("unix:///var/run/docker.sock")
    if Path("/var/run/docker.sock").exists() and system.ok("version"):
        return system
    private = Docker(f"unix://{RUN_DIR / 'docker.sock'}", private=True)
    pidfile = RUN_DIR / "docker.pid"
    if _pid_alive(pidfile) and private.ok("version"):
        root = private("info", "-f", "{{.DockerRootDir}}", check=False).strip()
        if root == str(CACHE / "docker") and Path(root).is_dir():
            return private
        log(f"the running private dockerd uses {root!r}, not {CACHE / 'docker'}; restarting it")
        stop_private_daemon()
    ensure_system_packages()
    ensure_blackhole()
    log("starting a private dockerd")
    _unmount_under(RUN_DIR, CACHE / "docker")
    _remove_stale_links()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    (CACHE / "docker").mkdir(parents=True, exist_ok=True)
    config = RUN_DIR / "daemon.json"
    config.write_text(json.dumps(_daemon_config(), indent=2))
    logfile = open(CACHE / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
    subprocess.Popen(
        ["dockerd", "--config-file", str(config)],
        stdout=logfile,
        stderr=logfile,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not private.ok("version"):
        if time.monotonic() > deadline:
            raise JetsimError(f"dockerd did not come up within 60 s; see {CACHE / 'dockerd.log'}")
        time.sleep(0.2)
    return private


def stop_private_daemon() -> None:
    pid = _pid_alive(RUN_DIR / "docker.pid")
    if pid is None:
        return
    log(f"stopping the private dockerd (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 60):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- image


def _apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (jetsim downloads nothing apt would not)."""
    if os.environ.get("JETSIM_DEBIAN_MIRROR"):
        return os.environ["JETSIM_DEBIAN_MIRROR"]
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for uri in re.findall(r"^URIs:\s*(\S+)", path.read_text(), flags=re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for url in re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", legacy.read_text(), flags=re.M):
            if url.rstrip("/").endswith("/debian"):
                return url
    raise JetsimError("no Debian mirror found in /etc/apt sources; set JETSIM_DEBIAN_MIRROR")


def recipe_hash() -> str:
    recipe = {"suite": SUITE, "variant": "minbase", "include": sorted(PACKAGES), "v": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def ensure_rootfs() -> Path:
    digest = recipe_hash()
    tarball = CACHE / f"rootfs-{SUITE}-{digest}.tar"
    if tarball.exists():
        return tarball
    ensure_system_packages()
    work = CACHE / f"rootfs-{digest}.work"
    _unmount_under(work)
    shutil.rmtree(work, ignore_errors=True)
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} (cached afterwards as {tarball.name})")
    started = time.monotonic()
    sh(
        "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}", SUITE, str(work), _apt_mirror(),
    )  # fmt: skip
    shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
    (work / "var/cache/apt/archives/partial").mkdir(parents=True)
    partial = tarball.with_suffix(".partial")
    sh("tar", "--numeric-owner", "-C", str(work), "-cf", str(partial), ".")
    partial.rename(tarball)
    shutil.rmtree(work, ignore_errors=True)
    log(f"rootfs ready in {time.monotonic() - started:.0f} s")
    return tarball


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Serialize the slow cache builders (debootstrap, import) between concurrent jetsim processes."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_image(docker: Docker) -> str:
    with cache_lock():
        return _ensure_image(docker)


def _ensure_image(docker: Docker) -> str:
    base = f"jetsim-base:{recipe_hash()}"
    if not docker.ok("image", "inspect", base):
        tarball = ensure_rootfs()
        log(f"importing {tarball.name} as {base}")
        docker("import", str(tarball), base)
    tag = "jetsim-host:latest"
    docker(
        "build", "--network", "none", "--build-arg", f"BASE={base}", "-t", tag,
        "-f", str(HERE / "image/Dockerfile"), str(HERE),
    )  # fmt: skip
    return tag


def privileged_runtime(docker: Docker, image: str) -> str | None:
    """None when plain --privileged works; the wrapper runtime when this machine needs it."""
    probe = ["run", "--rm", "--privileged", "--network", "none", "--entrypoint", "/bin/true", image]
    proc = subprocess.run(["docker", *probe], capture_output=True, text=True, env=docker.env)
    if proc.returncode == 0:
        return None
    if "apply caps" in proc.stderr and docker.private:
        log("plain --privileged fails here (capability bounding set); using the jetsim-runc wrapper")
        return "jetsim-runc"
    raise JetsimError(f"cannot start a privileged container: {proc.stderr.strip()}")


# ---------------------------------------------------------------------------------------------- fleet


@dataclass
class HostSpec:
    name: str
    address: str
    variant: str = "orin-nx-16-super"
    power_mode: str | None = None


def container(name: str) -> str:
    return f"{FLEET}-{name}"


def ssh_key() -> Path:
    key = CACHE / "ssh/id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jetsim", "-f", str(key))
    return key


def _tar(files: dict[str, tuple[bytes, int, int]]) -> bytes:
    """A tar stream of path -> (content, mode, uid) with parent directories owned like the file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, (content, mode, uid) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(content), mode, uid, uid
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def create_host(docker: Docker, image: str, runtime: str | None, spec: HostSpec, keep_docker: bool = False) -> None:
    """Create and start a host. keep_docker: the build host's Docker data (/var/lib/docker, where BuildKit keeps
    the ccache mount of the llama.cpp build) outlives the fleet, as a real build host's does; see
    reset_kept_docker. Every other host starts with an empty Docker."""
    name = container(spec.name)
    docker("rm", "-f", name, check=False)
    if keep_docker:
        volume, volume_label = f"{name}-docker-kept", KEPT_LABEL
    else:
        volume, volume_label = f"{name}-docker", LABEL
        docker("volume", "rm", "-f", volume, check=False)
    args = [
        "create", "--name", name, "--hostname", spec.name, "--label", LABEL,
        "--label", f"jetsim.variant={spec.variant}", "--privileged", "--cgroupns", "private",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3",
        "--restart", "unless-stopped", "--network", NETWORK, "--ip", spec.address,
        "--mount", f"type=volume,source={volume},target=/var/lib/docker,volume-label={volume_label}",
    ]  # fmt: skip
    if runtime:
        args += ["--runtime", runtime]
    docker(*args, image)
    config = variants.host_config(spec.variant, spec.name, spec.power_mode)
    pubkey = ssh_key().with_suffix(".pub").read_bytes()
    stream = _tar(
        {
            "etc/jetsim/host.json": (json.dumps(config, indent=2).encode(), 0o644, 0),
            f"home/{ADMIN_USER}/.ssh/authorized_keys": (pubkey, 0o600, 1000),
        }
    )
    docker("cp", "-a", "-", f"{name}:/", input=stream)
    docker("start", name)


# What a previous fleet left in the build host's kept Docker: its containers and every image but jetsim's own
# build bases. BuildKit's build cache (with the ccache mount) stays.
_RESET_KEPT_DOCKER = (
    "docker ps -aq | xargs -r docker rm -f >/dev/null && "
    "docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -v -e '^jetsim/' -e '<none>'"
    " | xargs -r docker rmi >/dev/null && "
    "docker image prune -f >/dev/null"
)


def boot_host(docker: Docker, image: str, runtime: str | None, spec: HostSpec, builder: bool) -> str:
    """Create a host, wait for its boot and return its SSH host key line. The build host keeps its Docker data;
    when a previous fleet left it unusable (a dockerd killed mid-write), it starts over with an empty one."""
    create_host(docker, image, runtime, spec, keep_docker=builder)
    try:
        known = wait_booted(docker, spec)
        if not builder or docker.ok("exec", container(spec.name), "sh", "-c", _RESET_KEPT_DOCKER):
            return known
    except JetsimError as exc:
        if not builder:
            raise
        log(f"{spec.name}: {exc}")
    log(f"{spec.name}: the kept Docker data is unusable: starting over with an empty one")
    docker("rm", "-f", container(spec.name), check=False)
    docker("volume", "rm", "-f", f"{container(spec.name)}-docker-kept", check=False)
    create_host(docker, image, runtime, spec, keep_docker=True)
    return wait_booted(docker, spec)


def wait_booted(docker: Docker, spec: HostSpec) -> str:
    """Wait for systemd to finish booting, then return the host's SSH host key line."""
    name = container(spec.name)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while True:
        # Right after a (re)start PID 1 may still be jetsim-init, or systemd without its bus yet:
        # systemctl then prints nothing or "offline"; --wait covers the rest of the boot.
        state = docker(
            "exec", name, "timeout", str(BOOT_TIMEOUT_S), "systemctl", "is-system-running", "--wait", check=False
        ).strip()
        if state not in ("", "offline", "unknown") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if state != "running":
        failed = docker("exec", name, "systemctl", "--failed", "--no-legend", "--plain", check=False)
        units = {line.split()[0] for line in failed.splitlines() if line.strip()}
        if not (state == "degraded" and units and units <= variants.expected_failed_units(spec.variant)):
            raise JetsimError(f"{spec.name} booted into state {state!r}; failed units:\n{failed}")
    if not route_ready(spec.address):
        raise JetsimError(f"no route to {spec.address} via {BRIDGE}; refusing to connect")
    key = docker("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()
    return f"{spec.address} {key[0]} {key[1]}"


def fleet_specs(hosts: int, variant: str, overrides: dict[str, dict[str, str]]) -> list[HostSpec]:
    if not 1 <= _INDEX <= 99:
        raise JetsimError(f"JETSIM_SUBNET_INDEX must be 1-99, got {_INDEX}")
    if not 1 <= hosts <= 200:
        raise JetsimError(f"--hosts must be between 1 and 200, got {hosts}")
    specs = []
    for index in range(1, hosts + 1):
        name = f"jetson-{index}"
        spec = HostSpec(name, str(SUBNET.network_address + 10 + index), variant)
        for key, value in overrides.get(name, {}).items():
            setattr(spec, key, value)
        specs.append(spec)
    unknown = set(overrides) - {spec.name for spec in specs}
    if unknown:
        raise JetsimError(f"--host names unknown hosts: {', '.join(sorted(unknown))}")
    return specs


def load_state() -> list[HostSpec]:
    path = STATE / "fleet.json"
    if not path.exists():
        return []
    return [HostSpec(**entry) for entry in json.loads(path.read_text())]


def write_state(specs: list[HostSpec], known_hosts: dict[str, str]) -> Path:
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "fleet.json").write_text(json.dumps([spec.__dict__ for spec in specs], indent=2))
    (STATE / "known_hosts").write_text("".join(known_hosts[s.name] + "\n" for s in specs if s.name in known_hosts))
    inventory = {
        "all": {
            "children": {
                "jetsons": {
                    "hosts": {
                        spec.name: {"ansible_host": spec.address, "jetsim_variant": spec.variant} for spec in specs
                    },
                    "vars": {
                        "ansible_user": ADMIN_USER,
                        "ansible_become": True,
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "ansible_ssh_private_key_file": str(ssh_key()),
                        "ansible_ssh_common_args": (
                            f"-o UserKnownHostsFile={STATE / 'known_hosts'} -o StrictHostKeyChecking=yes"
                        ),
                        # Documented variables through which jetsim differs from a real device:
                        "jetson_preflight_architectures": ["aarch64", "x86_64"],
                        "jetson_preflight_device_tree_dir": "/sys/firmware/devicetree/base",
                        # A CPU build from small local bases, every fleet on one disk: the build host's needs
                        # scaled to it (a real one holds the 10 GB l4t-jetpack builder base and CUDA images).
                        "jetson_preflight_build_host_disk_checks": [
                            {"path": "/var/lib/docker", "min_free_mb": 4096},
                            {"path": "/var/lib/docker-registry", "min_free_mb": 2048},
                        ],
                        # The fleet's network is internal to this machine: serve without an API key (the product
                        # refuses that unless told, see llama_server_open_access).
                        "llama_server_open_access": True,
                        # Where the VM lacks CAP_SYS_RESOURCE (the runc wrapper drops it), a nested container
                        # cannot raise RLIMIT_MEMLOCK: keep Docker's default limit (llama.cpp still tries mlock).
                        "llama_server_memlock_ulimit": "",
                    },
                }
            },
            # Fleet-wide settings that the controller plays (hosts: localhost) need too. The registry's CA and
            # certificate belong to this fleet (its registry address): fleets side by side must not rewrite one
            # shared certificate under each other's running registries.
            "vars": {**_fleet_vars(), "fleet_registry_secrets_dir": str(STATE / "registry-secrets")},
        }
    }
    path = STATE / "inventory.yml"
    header = "# Written by tests/jetsim/jetsim up: an emulated Orin NX fleet. Do not edit.\n"
    path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    return path


def _fleet_vars() -> dict[str, object]:
    path = STATE / "vars.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def prepare_llama_build(builder: str) -> dict[str, object]:
    """What a llama.cpp build needs on jetsim: the source mirror (from PyPI's llama-cpp-python sdist, since
    no git host is reachable) and local base images on the build host. Returns the inventory variables."""
    sys.path.insert(0, str(REPO / "tests/fixtures"))
    import llama_src

    mirror = llama_src.ensure_llama_cpp_mirror(CACHE.parent / "llama-src")
    images = preload_build_images(builder)
    values: dict[str, object] = {
        "llama_cpp_build_repo_url": str(mirror.repo),
        "llama_cpp_build_ref": mirror.tag,
        "llama_cpp_build_cuda": False,
        "llama_cpp_build_base_image": images["llama-build"],
        "llama_cpp_build_runtime_image": images["llama-runtime"],
        "llama_cpp_build_host": builder,
    }
    return values


HUB_REPO = "jetsim/tiny-llama-GGUF"
HUB_FILE = "tiny-llama.gguf"


def stop_hub() -> None:
    pidfile = STATE / "hub.pid"
    try:
        pid = int(pidfile.read_text())
        if b"hub.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 10)
    except (OSError, ValueError):
        pass
    pidfile.unlink(missing_ok=True)


def start_hub() -> dict[str, object]:
    """A Hugging Face hub imitation for the fleet (no hub is reachable): the tiny test GGUF, served on the
    fleet network's gateway so that the controller and, for device-side downloads, the hosts reach it."""
    sys.path.insert(0, str(REPO / "tests/fixtures"))
    import tiny_gguf

    stop_hub()
    model = STATE / "hub" / HUB_REPO / HUB_FILE
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        tiny_gguf.write_tiny_llama_gguf(model)
    gateway = str(SUBNET.network_address + 1)
    port = int(os.environ.get("JETSIM_HUB_PORT") or 8765)
    if not route_ready(gateway) and gateway not in sh("ip", "-o", "addr", "show", "dev", BRIDGE, check=False):
        raise JetsimError(f"{gateway} is not on {BRIDGE}; refusing to start the hub")
    logfile = open(STATE / "hub.log", "ab")  # noqa: SIM115 - handed to the hub process
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests/fixtures/hub.py"), "--serve", str(STATE / "hub"),
         "--host", gateway, "--port", str(port)],
        stdout=logfile, stderr=logfile, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    (STATE / "hub.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection((gateway, port), timeout=1):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise JetsimError(f"the hub imitation did not start; see {STATE / 'hub.log'}")
        time.sleep(0.1)
    return {
        "hf_model_endpoint": f"http://{gateway}:{port}",
        "hf_model_repo_id": HUB_REPO,
        "hf_model_filename": HUB_FILE,
        "hf_model_revision": "main",
    }


def _known_hosts_now() -> dict[str, str]:
    path = STATE / "known_hosts"
    specs = {spec.address: spec.name for spec in load_state()}
    result = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.split()[0] in specs:
                result[specs[line.split()[0]]] = line
    return result


def remove_fleet(docker: Docker) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}").split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    volumes = docker("volume", "ls", "-q", "--filter", f"label={LABEL}").split()
    if volumes:
        docker("volume", "rm", "-f", *volumes)
    docker("network", "rm", NETWORK, check=False)


def ensure_network(docker: Docker) -> None:
    ensure_blackhole()
    if docker.ok("network", "inspect", NETWORK):
        return
    docker(
        "network", "create", "--internal", "--driver", "bridge", "--subnet", str(SUBNET),
        "--gateway", str(SUBNET.network_address + 1), "-o", f"com.docker.network.bridge.name={BRIDGE}",
        "--label", LABEL, NETWORK,
    )  # fmt: skip


def up(hosts: int, variant: str, overrides: dict[str, dict[str, str]], build_images: bool = True) -> Path:
    specs = fleet_specs(hosts, variant, overrides)
    for spec in specs:
        variants.host_config(spec.variant, spec.name, spec.power_mode)  # validate before changing anything
    ensure_blackhole()
    docker = ensure_daemon()
    image = ensure_image(docker)
    runtime = privileged_runtime(docker, image)
    remove_fleet(docker)
    ensure_network(docker)
    started = time.monotonic()
    builder = specs[0].name if build_images else None
    for spec in specs:
        if spec.name != builder:
            create_host(docker, image, runtime, spec)
    # The others boot meanwhile; the build host is created (and, when needed, created again) by boot_host.
    known = {
        spec.name: boot_host(docker, image, runtime, spec, True) if spec.name == builder else wait_booted(docker, spec)
        for spec in specs
    }
    (STATE / "vars.json").unlink(missing_ok=True)
    fleet_vars = start_hub()
    if build_images:
        fleet_vars.update(prepare_llama_build(specs[0].name))
    (STATE / "vars.json").write_text(json.dumps(fleet_vars, indent=2))
    path = write_state(specs, known)
    log(f"{len(specs)} host(s) up in {time.monotonic() - started:.1f} s")
    return path


def recreate(name: str, variant: str | None, power_mode: str | None) -> Path:
    specs = load_state()
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        raise JetsimError(f"no host {name!r} in the fleet; hosts: {', '.join(s.name for s in specs)}")
    spec.variant = variant or spec.variant
    spec.power_mode = power_mode
    variants.host_config(spec.variant, spec.name, spec.power_mode)
    docker = ensure_daemon()
    image = ensure_image(docker)
    ensure_network(docker)
    builder = _fleet_vars().get("llama_cpp_build_host") == name
    known = _known_hosts_now()
    known[spec.name] = boot_host(docker, image, privileged_runtime(docker, image), spec, builder)
    if builder:
        preload_build_images(name)
    return write_state(specs, known)


def down() -> None:
    stop_hub()
    docker = ensure_daemon()
    remove_fleet(docker)
    others = docker("ps", "-aq", "--filter", "label=jetsim.fleet").split()
    if docker.private and not others:
        stop_private_daemon()
    for name in ("fleet.json", "inventory.yml", "known_hosts", "vars.json"):
        (STATE / name).unlink(missing_ok=True)


def status() -> list[dict[str, str]]:
    docker = ensure_daemon()
    rows = []
    for spec in load_state():
        name = container(spec.name)
        state = docker("inspect", "-f", "{{.State.Status}}", name, check=False).strip() or "absent"
        system = ""
        if state == "running":
            system = docker("exec", name, "systemctl", "is-system-running", check=False).strip()
        rows.append({"host": spec.name, "address": spec.address, "variant": spec.variant, "container": state,
                     "systemd": system})  # fmt: skip
    return rows


def _started_at(docker: Docker, name: str) -> str:
    return docker("inspect", "-f", "{{.State.StartedAt}}", container(name)).strip()


def reboot_host(name: str) -> None:
    """`systemctl reboot` inside the host; return once the next boot has finished."""
    docker = ensure_daemon()
    spec = next(s for s in load_state() if s.name == name)
    before = _started_at(docker, name)
    docker("exec", container(name), "systemctl", "reboot", check=False)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while _started_at(docker, name) == before:
        if time.monotonic() > deadline:
            raise JetsimError(f"{name} did not restart within {BOOT_TIMEOUT_S} s of systemctl reboot")
        time.sleep(0.2)
    wait_booted(docker, spec)


def preload_build_images(name: str) -> dict[str, str]:
    """Give one host the local base images its llama.cpp build uses (no registry is reachable)."""
    import llama_images

    docker = ensure_daemon()
    with cache_lock():
        images = llama_images.ensure_images(docker, CACHE)
    for image in images.values():
        if docker.ok("exec", container(name), "docker", "image", "inspect", image):
            continue
        log(f"loading {image} into {name}")
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, env=docker.env)
        load = subprocess.run(
            ["docker", "exec", "-i", container(name), "docker", "load", "--quiet"],
            stdin=save.stdout, capture_output=True, text=True, env=docker.env,
        )  # fmt: skip
        if save.stdout:
            save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise JetsimError(f"could not load {image} into {name}: {load.stderr.strip()}")
    return images


def stop_host(name: str) -> None:
    ensure_daemon()("stop", container(name))


def start_host(name: str) -> None:
    docker = ensure_daemon()
    docker("start", container(name))
    spec = next(s for s in load_state() if s.name == name)
    wait_booted(docker, spec)
