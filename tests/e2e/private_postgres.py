"""A private PostgreSQL server for tests that stop, break or restart the database.

The machine's shared server at 127.0.0.1:5432 is never touched: this one gets its own data directory
in a fresh temporary directory, its own free port, listens on 127.0.0.1 only and puts its unix socket
in that temporary directory. PostgreSQL refuses to run as root, so ``initdb`` and ``pg_ctl`` run as
the ``postgres`` OS user through ``runuser`` when the tests run as root.

    with PrivatePostgres() as pg:      # initdb + start
        dsn = pg.dsn
        pg.stop()                      # pg_ctl stop -m fast
        pg.start()                     # same port, same data directory
    # stopped (immediate) and removed
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
DB_USER = "postgres"


class PrivatePostgresError(RuntimeError):
    """The private server cannot be set up or does not do what it was asked."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bin_dir() -> Path:
    """The ``bin`` directory of the highest PostgreSQL version installed under /usr/lib/postgresql."""
    candidates = [
        d for d in PG_ROOT.glob("*/bin") if (d / "initdb").is_file() and (d / "pg_ctl").is_file()
    ]  # fmt: skip
    if not candidates:
        raise PrivatePostgresError(
            f"no PostgreSQL server binaries (initdb, pg_ctl) under {PG_ROOT}/*/bin; "
            "install the server package (e.g. apt-get install postgresql) to run these tests"
        )
    return max(candidates, key=_version_key)


class PrivatePostgres:
    """One throwaway PostgreSQL cluster: ``setup()`` once, then ``start()``/``stop()`` at will."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bin_dir = find_bin_dir()
        self.port = port or free_port()
        self.root: Path | None = None
        self.running = False
        self._as_user: list[str] = []
        self._uid: int | None = None
        self._gid: int | None = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PrivatePostgresError(
                    "running as root but `runuser` is missing (package util-linux): PostgreSQL refuses to run "
                    f"as root and needs `runuser -u {OS_USER}` to start"
                )
            try:
                entry = pwd.getpwnam(OS_USER)
            except KeyError as exc:
                raise PrivatePostgresError(
                    f"running as root but there is no `{OS_USER}` OS user to run PostgreSQL as"
                ) from exc
            self._as_user = [runuser, "-u", OS_USER, "--"]
            self._uid, self._gid = entry.pw_uid, entry.pw_gid

    # -- paths ----------------------------------------------------------------------------------
    def _root(self) -> Path:
        if self.root is None:
            raise PrivatePostgresError("setup() has not run")
        return self.root

    @property
    def data_dir(self) -> Path:
        return self._root() / "data"

    @property
    def log_file(self) -> Path:
        return self._root() / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self._root()

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/postgres"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, PrivatePostgresError):
            return "(no server log)"

    # -- commands -------------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 60) -> str:
        cmd = [*self._as_user, str(self.bin_dir / args[0]), *args[1:]]
        try:
            done = subprocess.run(
                cmd,
                cwd=self._root(),  # readable by the postgres user, unlike the caller's directory maybe
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PrivatePostgresError(f"{' '.join(cmd)} did not finish in {timeout} s\n{self.log_tail()}") from exc
        if done.returncode != 0:
            raise PrivatePostgresError(
                f"{' '.join(cmd)} exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}\n"
                f"server log:\n{self.log_tail()}"
            )
        return done.stdout

    def setup(self) -> None:
        """Make the temporary directory and run initdb (trust authentication for user postgres)."""
        if self.root is not None:
            return
        # Directly under /tmp: pytest's own temporary directories are 0700 root and the postgres user
        # could not reach a data directory inside them.
        self.root = Path(tempfile.mkdtemp(prefix="polite-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
        if self._uid is not None and self._gid is not None:
            os.chown(self.root, self._uid, self._gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", DB_USER, "--auth=trust", "--encoding=UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start (or restart after stop()) on the same port and data directory; returns once it accepts."""
        options = " ".join(
            [
                f"-c port={self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c fsync=off",  # only fast (clean) shutdowns here: nothing relies on surviving an OS crash
                "-c max_connections=40",
                "-c shared_buffers=32MB",
            ]
        )
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
            timeout=90,
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: fast disconnects every client and shuts down cleanly."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir), timeout=90)
        self.running = False

    def cleanup(self) -> None:
        """Stop if running (immediate) and remove the temporary directory."""
        if self.root is None:
            return
        if self.running:
            try:
                self.stop("immediate")
            except PrivatePostgresError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PrivatePostgres:
        try:
            self.setup()
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def started_private_postgres() -> Iterator[PrivatePostgres]:
    """A started private server, cleaned up on exit; fails the test (never skips) when it cannot run."""
    server: PrivatePostgres | None = None
    try:
        server = PrivatePostgres()
        server.setup()
        server.start()
    except PrivatePostgresError as exc:
        if server is not None:
            server.cleanup()
        pytest.fail(f"cannot run a private PostgreSQL server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """The same as a fixture (for a conftest or ``pytest_plugins``)."""
    with started_private_postgres() as server:
        yield server
