"""Images: what a container's image would give it (entrypoint, command, environment, user, ...).

There is no registry and no image here: the machine's own file system is every image's content
(``container_init.py`` overlays it), and an :class:`Image` holds the image's configuration, as
``docker inspect`` shows it (https://github.com/opencontainers/image-spec/blob/main/config.md). The test
says which image names run what, in an :class:`ImageTable`; a name the table does not know cannot be
pulled (the kubelet's ``ErrImagePull``, then ``ImagePullBackOff``).

- :func:`dockerfile_image` reads a target of the repository's ``Dockerfile`` (``ENV``, ``WORKDIR``,
  ``USER``, ``ENTRYPOINT``, ``CMD``, ``STOPSIGNAL``, stage by stage) and binds the repository's
  virtualenv where the Dockerfile copies one (``/opt/venv``), so ``polite-tracker`` is the console script
  of ``.venv``, running the working tree's code.
- :func:`postgres_image` plays the official ``postgres`` image: ``postgres-entrypoint.sh`` (next to
  this file) is its ``docker-entrypoint.sh``, run with the machine's PostgreSQL binaries.
- :data:`HOST_IMAGE`: a bare image for small generic pods (``sh -c``, ``python3 -c``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT_SCRIPT = Path(__file__).resolve().parent / "postgres-entrypoint.sh"
PG_ROOT = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class Image:
    """An image's configuration, and the host directories its file system adds (container path -> host)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = (("PATH", DEFAULT_PATH),)
    workdir: str = "/"
    user: str = ""  # "uid[:gid]" or a name in ``users``; empty is root
    stop_signal: int = signal.SIGTERM
    binds: tuple[tuple[str, str], ...] = ()
    users: tuple[str, ...] = ()  # /etc/passwd lines the image has
    groups: tuple[str, ...] = ()  # /etc/group lines the image has
    traverse: tuple[str, ...] = ()  # directories a non-root user must be able to enter (the interpreter's)

    def uid_gid(self) -> tuple[int | None, int | None]:
        """The numeric user and group of ``USER`` (None when the image names none, or a name it lacks)."""
        if not self.user:
            return 0, 0
        name, _, group = self.user.partition(":")
        uid = int(name) if name.isdigit() else _lookup(self.users, name)
        gid = int(group) if group.isdigit() else _lookup(self.groups, group) if group else None
        if gid is None and uid is not None:
            gid = next((int(line.split(":")[3]) for line in self.users if line.split(":")[2] == str(uid)), uid)
        return uid, gid


def _lookup(lines: Iterable[str], name: str) -> int | None:
    for line in lines:
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    return None


def _interpreter_dirs(venv: Path) -> tuple[str, ...]:
    """Directories on the way to the virtualenv's interpreter that others cannot enter (a root-only
    home holding pyenv); an image's interpreter is world-executable, so the image makes them so."""
    found = []
    target = Path(os.path.realpath(venv / "bin" / "python"))
    for parent in reversed(target.parents):
        if not os.stat(parent).st_mode & 0o001:
            found.append(str(parent))
    return tuple(found)


def _instructions(text: str) -> Iterable[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)


def _exec_form(value: str) -> tuple[str, ...]:
    """ENTRYPOINT/CMD: the JSON (exec) form as is, the shell form through ``/bin/sh -c``."""
    if value.startswith("["):
        return tuple(json.loads(value))
    return ("/bin/sh", "-c", value)


def _env_pairs(rest: str, env: dict[str, str]) -> None:
    words = shlex.split(rest)
    if words and "=" not in words[0]:  # legacy form: ENV KEY value words
        env[words[0]] = _expand(" ".join(words[1:]), env)
        return
    for word in words:
        key, _, value = word.partition("=")
        env[key] = _expand(value, env)


def _accounts(command: str, stage: dict[str, object]) -> None:
    """The /etc/passwd and /etc/group lines a ``RUN`` with ``groupadd``/``useradd`` leaves in the image."""
    for part in re.split(r"&&|;", command):
        words = shlex.split(part)
        if not words or words[0] not in ("groupadd", "useradd"):
            continue
        options: dict[str, str] = {}
        for flag, value in itertools.pairwise(words[1:]):
            if flag.startswith("--") and not value.startswith("--"):
                options[flag] = value
        name = words[-1]
        groups = stage.setdefault("groups", [])
        users = stage.setdefault("users", [])
        assert isinstance(groups, list) and isinstance(users, list)
        if words[0] == "groupadd":
            groups.append(f"{name}:x:{options.get('--gid', '999')}:")
            continue
        group = options.get("--gid", name)
        gid = group if group.isdigit() else next((g.split(":")[2] for g in groups if g.startswith(f"{group}:")), "")
        home, shell = options.get("--home-dir", f"/home/{name}"), options.get("--shell", "/bin/sh")
        users.append(f"{name}:x:{options.get('--uid', '1000')}:{gid}::{home}:{shell}")


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def dockerfile_image(
    target: str, dockerfile: Path = REPO / "Dockerfile", *, venv: Path = REPO / ".venv", venv_at: str = "/opt/venv"
) -> Image:
    """The configuration a ``docker build --target TARGET`` image would have (a stage inherits the stage
    it starts FROM; an image from a registry starts as an empty configuration with the default PATH)."""
    stages: dict[str, dict[str, object]] = {}
    current: dict[str, object] = {}
    for word, rest in _instructions(dockerfile.read_text(encoding="utf-8")):
        if word == "FROM":
            parts = rest.split()
            base = stages.get(parts[0], {"env": {"PATH": DEFAULT_PATH}})
            current = {k: (v.copy() if isinstance(v, dict | list) else v) for k, v in base.items()}
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages[parts[2]] = current
        elif word == "ENV":
            env = current.setdefault("env", {"PATH": DEFAULT_PATH})
            assert isinstance(env, dict)
            _env_pairs(rest, env)
        elif word in ("WORKDIR", "USER", "STOPSIGNAL"):
            current[word.lower()] = rest
        elif word == "ENTRYPOINT":
            current["entrypoint"] = _exec_form(rest)
            current.pop("cmd", None)  # Dockerfile reference: ENTRYPOINT resets an inherited CMD
        elif word == "CMD":
            current["cmd"] = _exec_form(rest)
        elif word == "RUN":
            _accounts(rest, current)
    if target not in stages:
        raise ValueError(f"{dockerfile} has no stage {target!r} (stages: {', '.join(stages)})")
    stage = stages[target]
    env = stage.get("env") or {}
    assert isinstance(env, dict)
    stop = str(stage.get("stopsignal") or "SIGTERM")
    return Image(
        entrypoint=_strings(stage.get("entrypoint")),
        cmd=_strings(stage.get("cmd")),
        env=tuple(env.items()),
        workdir=str(stage.get("workdir") or "/"),
        user=str(stage.get("user") or ""),
        stop_signal=int(stop)
        if stop.isdigit()
        else int(signal.Signals[stop if stop.startswith("SIG") else f"SIG{stop}"]),
        # The virtualenv refers to itself and to the working tree by absolute paths (console scripts'
        # shebangs, the editable install's finder), which must exist inside the container too: the
        # repository is bound read-only at its own path (a clone under /tmp, as CI makes one, would
        # otherwise vanish behind the container's empty /tmp).
        binds=((venv_at, str(venv)), (str(REPO), str(REPO))),
        users=_strings(stage.get("users")),
        groups=_strings(stage.get("groups")),
        traverse=_interpreter_dirs(venv),
    )


def postgres_bin_dir() -> Path:
    """The machine's newest PostgreSQL server binaries (the image's version is not what runs)."""
    found = [d for d in PG_ROOT.glob("*/bin") if (d / "initdb").is_file()]
    if not found:
        raise FileNotFoundError(f"no PostgreSQL server binaries under {PG_ROOT}/*/bin (apt-get install postgresql)")
    return max(found, key=lambda d: int(re.sub(r"\D", "", d.parent.name) or 0))


def postgres_image() -> Image:
    """The official image (https://hub.docker.com/_/postgres): user postgres 999, PGDATA, STOPSIGNAL SIGINT
    (a fast shutdown), ``docker-entrypoint.sh postgres``; here with the machine's binaries."""
    bin_dir = postgres_bin_dir()
    return Image(
        entrypoint=("/usr/local/bin/docker-entrypoint.sh",),
        cmd=("postgres",),
        env=(
            ("PATH", f"{DEFAULT_PATH}:{bin_dir}"),
            ("PGDATA", "/var/lib/postgresql/data"),
            ("LANG", "C.UTF-8"),
        ),
        workdir="/",
        stop_signal=signal.SIGINT,
        binds=(("/usr/local/bin/docker-entrypoint.sh", str(ENTRYPOINT_SCRIPT)),),
        users=("postgres:x:999:999::/var/lib/postgresql:/bin/bash",),
        groups=("postgres:x:999:",),
    )


HOST_IMAGE = Image()


@dataclass(frozen=True)
class ImageTable:
    """Image references (``[registry/]repository[:tag][@digest]``) to what runs; a key without a tag
    matches every tag of that repository, ``docker.io/library/`` may be left out."""

    images: Mapping[str, Image] = field(default_factory=dict)

    def resolve(self, reference: str) -> Image | None:
        for candidate in _names(reference):
            if candidate in self.images:
                return self.images[candidate]
        return None

    def with_images(self, extra: Mapping[str, Image]) -> ImageTable:
        return replace(self, images={**self.images, **extra})


def _names(reference: str) -> list[str]:
    name = reference.split("@", 1)[0]
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    short = [
        n.removeprefix("docker.io/library/").removeprefix("docker.io/") for n in (name, repository)
    ]  # fmt: skip
    return list(dict.fromkeys([name, repository, *short]))


def default_images() -> ImageTable:
    """The images the operator renders: the tracker and operator targets of the Dockerfile, PostgreSQL
    (official and CloudNativePG's), and small generic images for tests' own pods."""
    postgres = postgres_image()
    return ImageTable(
        {
            "politetenant/polite-tracker": dockerfile_image("tracker"),
            "politetenant/polite-operator": dockerfile_image("operator"),
            "postgres": postgres,
            "ghcr.io/cloudnative-pg/postgresql": postgres,
            "busybox": HOST_IMAGE,
            "python": replace(HOST_IMAGE, cmd=("python3",)),
        }
    )
