"""Throwaway Firestore and Cloud Storage API servers for tests, each on a free port.

- Firestore: the npm package @firestore-emulator/server (a gRPC implementation of the Firestore API),
  installed into .tools/ by `make`, started through scripts/firestore-emulator.mjs.
- Cloud Storage: gcp-storage-emulator (a pinned Python package), in memory.
Clients reach them through FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ServerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
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

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_firestore() -> ApiServer:
    node = shutil.which("node")
    package = ROOT / ".tools" / "node_modules" / "@firestore-emulator" / "server" / "package.json"
    if node is None or not package.exists():
        raise ServerUnavailable("the Firestore API server is not installed (needs node and `make servers`, which "
                                "installs @firestore-emulator/server into .tools/)")
    port = free_port()
    proc = subprocess.Popen([node, str(ROOT / "scripts" / "firestore-emulator.mjs"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_port(port, proc, "the Firestore API server")
    return ApiServer(f"127.0.0.1:{port}", proc)


def start_gcs() -> ApiServer:
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    if not exe.exists():
        raise ServerUnavailable("gcp-storage-emulator is not installed (it is pinned in requirements.txt; run `make venv`)")
    port = free_port()
    # Its request log goes nowhere: an unread pipe would fill up and block the server.
    proc = subprocess.Popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    _wait_port(port, proc, "the GCS API server")
    return ApiServer(f"http://127.0.0.1:{port}", proc)
