"""A throwaway PostgreSQL server for tests, from the Debian server binaries (never the system's cluster)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        which = shutil.which("initdb")
        if which:
            return Path(which).parent
        raise PostgresUnavailable("PostgreSQL server binaries not found (install the Debian package 'postgresql'; "
                                  "`make test` does it via scripts/ensure-postgres.sh)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start(options: str = "") -> Server:
    """A new server; `options` are extra server settings (`-c name=value ...`), after the defaults."""
    bd = bindir()
    base = Path(tempfile.mkdtemp(prefix="tenancy-pg-"))
    datadir, sockdir = base / "data", base / "sock"
    sockdir.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres system user
        run_as = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o755)
        shutil.chown(base, "postgres")
        shutil.chown(sockdir, "postgres")
    pwfile = base / "pw"
    pwfile.write_text("postgres\n")
    if run_as:
        shutil.chown(pwfile, "postgres")
    proc = subprocess.run([*run_as, str(bd / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
                           "-E", "UTF8", "--no-sync", f"--pwfile={pwfile}"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {proc.stderr.strip()}")
    port = _free_port()
    opts = (f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
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
