"""Local stand-ins for Cloud SQL, Firestore and Cloud Storage, each on a free port of 127.0.0.1: a throwaway
PostgreSQL (the Debian server binaries, never the system's cluster), the Firestore API server (the npm package
@firestore-emulator/server, installed into .tools/ by `make servers`, started through scripts/firestore-emulator.mjs)
and the GCS API server (gcp-storage-emulator, pinned in requirements.txt, in memory). Clients reach the last two
through FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST.

The test suite starts them per test process (tests/conftest.py) and stops them when it ends; `make demo` starts them
detached, under its own directory, and writes each one's pid so that `make demo-down` stops exactly them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
MAX_SOCKET_DIR = 80


class PostgresUnavailable(RuntimeError):
    pass


class ServerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ PostgreSQL

def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        which = shutil.which("initdb")
        if which:
            return Path(which).parent
        raise PostgresUnavailable("PostgreSQL server binaries not found (install the Debian package 'postgresql'; "
                                  "`make test` does it via scripts/ensure-postgres.sh)")
    return Path(found[-1]).parent


@dataclass
class Server:
    port: int
    datadir: Path
    sockdir: Path
    bindir: Path
    run_as: list[str]

    def dsn(self, user: str = "postgres", dbname: str = "postgres", password: str | None = None) -> str:
        pw = f" password={password}" if password else ""
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}{pw}"

    @property
    def pid(self) -> int:
        """The postmaster's process id (pg_ctl leaves the server running on its own)."""
        return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _reachable_by_postgres(path: Path) -> bool:
    """Whether the `postgres` system user can create files in `path` (every directory above it traversable)."""
    return subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(path)], capture_output=True).returncode == 0


def start(options: str = "", base: Path | None = None) -> Server:
    """A new server; `options` are extra server settings (`-c name=value ...`), after the defaults. Its data goes
    into `base` (a new directory), else into a new temporary directory; `stop` removes it."""
    bd = bindir()
    given = base is not None
    if base is None:
        base = Path(tempfile.mkdtemp(prefix="tenancy-pg-"))
    else:
        base.mkdir(parents=True)
    datadir, sockdir = base / "data", base / "sock"
    sockdir.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres system user
        run_as = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o755)
        shutil.chown(base, "postgres")
        shutil.chown(sockdir, "postgres")
        if given and not _reachable_by_postgres(sockdir):
            raise PostgresUnavailable(f"the postgres system user cannot reach {base} (a directory above it is private); "
                                      "choose a directory it can reach")
    pwfile = base / "pw"
    pwfile.write_text("postgres\n")
    if run_as:
        shutil.chown(pwfile, "postgres")
    proc = subprocess.run([*run_as, str(bd / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
                           "-E", "UTF8", "--no-sync", f"--pwfile={pwfile}"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {proc.stderr.strip()}")
    port = free_port()
    # A Unix socket's path is limited to about 100 bytes: under a deep directory the server listens on TCP only.
    sockets = f"-k {sockdir}" if len(str(sockdir)) <= MAX_SOCKET_DIR else "-k ''"
    opts = (f"-p {port} {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=100 -c wal_level=logical -c max_replication_slots=20 "
            f"-c max_wal_senders=20 -c max_logical_replication_workers=8 -c max_worker_processes=16 -c wal_retrieve_retry_interval=50ms {options}").strip()
    proc = subprocess.run([*run_as, str(bd / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l", str(base / "log"),
                           "-w", "-t", "60", "start"], capture_output=True, text=True)
    if proc.returncode != 0:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        raise PostgresUnavailable(f"pg_ctl start failed: {proc.stderr.strip()} {log[-2000:]}")
    server = Server(port=port, datadir=datadir, sockdir=sockdir, bindir=bd, run_as=run_as)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.stop()
    raise PostgresUnavailable("the throwaway PostgreSQL did not accept connections within 30s")


# ------------------------------------------------------------------------------ the Firestore and GCS API servers

def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else (log.read_text() if log and log.exists() else "")
            raise ServerUnavailable(f"{what} exited with {proc.returncode}: {out[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    proc.kill()
    raise ServerUnavailable(f"{what} did not accept connections on port {port} within {timeout:.0f}s")


@dataclass
class ApiServer:
    host: str          # host:port
    proc: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _popen(argv: list[str], log: Path | None, keep_output: bool) -> subprocess.Popen:
    """A server process. With `log`, its output goes there and it runs in a session of its own: it outlives the
    command that started it (and a Ctrl-C sent to that command's terminal) until it is stopped by its pid."""
    if log is not None:
        out: IO | int = open(log, "ab")
        try:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        finally:
            out.close()
    if keep_output:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # An unread pipe would fill up and block the server.
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_firestore(log: Path | None = None) -> ApiServer:
    node = shutil.which("node")
    package = ROOT / ".tools" / "node_modules" / "@firestore-emulator" / "server" / "package.json"
    if node is None or not package.exists():
        raise ServerUnavailable("the Firestore API server is not installed (needs node and `make servers`, which "
                                "installs @firestore-emulator/server into .tools/)")
    port = free_port()
    proc = _popen([node, str(ROOT / "scripts" / "firestore-emulator.mjs"), str(port)], log, keep_output=True)
    _wait_port(port, proc, "the Firestore API server", log=log)
    return ApiServer(f"127.0.0.1:{port}", proc)


def start_gcs(log: Path | None = None) -> ApiServer:
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    if not exe.exists():
        raise ServerUnavailable("gcp-storage-emulator is not installed (it is pinned in requirements.txt; run `make venv`)")
    port = free_port()
    proc = _popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"], log, keep_output=False)
    _wait_port(port, proc, "the GCS API server", log=log)
    return ApiServer(f"http://127.0.0.1:{port}", proc)
