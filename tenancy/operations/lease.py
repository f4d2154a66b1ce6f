"""A tenant's lease: one operation on a tenant at a time, whatever else runs.

The lease is two things in the registry:

- a row in `registry.leases` naming the operation that owns the tenant until it is done or aborted. It outlives
  the process: a killed operation keeps the tenant, so no other operation can start on half-moved data;
- an advisory lock on the tenant, held by the registry session of the process running the operation. The
  server releases it the moment that process dies (its connection closes), so "someone is running it now"
  is never guessed from timestamps.

A command that finds the lock held is refused with the holder's operation, start time, host and pid. One that
finds the row of a dead holder resumes that operation when it is the same operation (same kind and
arguments, or `--abort` of it), and is refused with the exact commands to resume or abort it otherwise.
`--take-over` ends a stuck holder's registry session (its next registry write fails: it stops) and resumes.

Every write an operation makes to the registry goes through its lease's session and checks the lease's token
in the same transaction, so a process whose lease was taken over can record nothing more.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import psycopg

from tenancy.errors import OperationError, Refused
from tenancy.operations.registry import CleanupRecord, OperationRow, Registry

TAKE_OVER_WAIT_S = 15.0
DEAD_HOLDER_WAIT_S = 10.0


class LeaseLost(OperationError):
    """This process no longer holds the tenant's lease (it was taken over): it must stop at once."""


@dataclass(frozen=True)
class Spec:
    """What an operation is: a later run with the same kind, tenant and `args` is the same operation."""

    kind: str
    tenant: str
    args: dict[str, Any]
    command: str                       # the command that resumes it
    abort_command: str | None = None   # the command that aborts it
    settings: dict[str, Any] = field(default_factory=dict)   # recorded when it starts, read back on resume


def _holder(command: str) -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "user": user, "command": command}


def _when(op: OperationRow) -> str:
    return op.started_at.astimezone().isoformat(timespec="seconds")


def busy_message(tenant: str, op: OperationRow | None) -> str:
    if op is None:
        return (f"tenant '{tenant}' is being taken by another command right now; run yours again once it has started "
                "(`tenancy moves` shows every operation and who holds it)")
    h = op.holder or {}
    who = f"pid {h.get('pid')} on {h.get('host')}" + (f" ({h.get('user')})" if h.get("user") else "")
    return (f"tenant '{tenant}' is held by operation {op.id} ({op.kind} {_args(op.args)}), started {_when(op)}, "
            f"running now as {who}{f', at {op.phase}' if op.phase else ''}; nothing was changed. Wait for it to "
            f"finish (`tenancy moves`), or if that process is stuck take the lease over: `{op.command} --take-over`")


def unfinished_message(tenant: str, op: OperationRow) -> str:
    how = f"resume it with `{op.command}`"
    if op.abort_command:
        how += f" or abort it with `{op.abort_command}`"
    phase = op.phase or ""
    where = f" after {phase[:-5]}" if phase.endswith(" done") else (f" in phase {phase}" if phase else " before its first phase")
    state = "waiting" if op.status == "waiting" else f"stopped{where}"
    note = f" ({op.message})" if op.status == "waiting" and op.message else ""
    return (f"tenant '{tenant}' has an unfinished {op.kind} {_args(op.args)} ({op.id}, started {_when(op)}, {state}"
            f"{note}); {how}; nothing was changed")


def _args(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(args.items())) or "-"


class Lease:
    """The lease of one tenant, held by this process for one operation (`take`)."""

    def __init__(self, registry: Registry, conn: psycopg.Connection, tenant: str, op: OperationRow, token: str,
                 resumed: bool):
        self.registry, self.conn, self.tenant, self.op, self.token, self.resumed = registry, conn, tenant, op, token, resumed
        self.closed = False

    @property
    def op_id(self) -> str:
        return self.op.id

    # ------------------------------------------------------------------------------------------------ take

    @classmethod
    def take(cls, registry: Registry, spec: Spec, *, abort: bool = False, take_over: bool = False) -> "Lease | None":
        """The tenant's lease for `spec`: a new operation, or the tenant's unfinished one when `spec` is the same
        operation (or `abort` of it). None when `abort` finds nothing to abort. Refused otherwise."""
        conn = registry.connect(autocommit=True)
        try:
            return cls._take(registry, conn, spec, abort, take_over)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def _take(cls, registry: Registry, conn: psycopg.Connection, spec: Spec, abort: bool, take_over: bool) -> "Lease | None":
        tenant = spec.tenant
        if not conn.execute("SELECT pg_try_advisory_lock(registry.lease_key(%s))", (tenant,)).fetchone()[0]:
            holder = registry.open_operation(tenant, conn)
            if take_over:
                cls._end_holder(conn, tenant)
            elif not cls._wait_for_dead_holder(registry, conn, tenant, holder):
                raise Refused(busy_message(tenant, registry.open_operation(tenant, conn) or holder))
        with conn.transaction():
            row = conn.execute("SELECT operation FROM registry.leases WHERE tenant_id = %s FOR UPDATE", (tenant,)).fetchone()
            nothing = resumed = False
            token = str(uuid.uuid4())
            holder = json.dumps(_holder(spec.command))
            if row is not None:
                op = registry.open_operation(tenant, conn)
                same = op.kind == spec.kind and (abort or op.args == spec.args)
                if not same:
                    raise Refused(unfinished_message(tenant, op))
                conn.execute("UPDATE registry.leases SET token = %s, backend_pid = pg_backend_pid(), holder = %s, "
                             "taken_at = now() WHERE tenant_id = %s", (token, holder, tenant))
                conn.execute("UPDATE registry.operations SET status = 'running', message = NULL, updated_at = now() "
                             "WHERE id = %s", (op.id,))
                resumed = True
            elif abort:
                nothing = True
            else:
                op_id = f"op-{uuid.uuid4().hex[:12]}"
                conn.execute("INSERT INTO registry.operations (id, tenant_id, kind, args, settings, command, abort_command, "
                             "status) VALUES (%s, %s, %s, %s, %s, %s, %s, 'running')",
                             (op_id, tenant, spec.kind, json.dumps(spec.args), json.dumps(spec.settings), spec.command,
                              spec.abort_command))
                conn.execute("INSERT INTO registry.leases (tenant_id, operation, token, backend_pid, holder) VALUES "
                             "(%s, %s, %s, pg_backend_pid(), %s)", (tenant, op_id, token, holder))
        if nothing:
            conn.execute("SELECT pg_advisory_unlock(registry.lease_key(%s))", (tenant,))
            conn.close()
            return None
        return cls(registry, conn, tenant, registry.open_operation(tenant, conn), token, resumed)

    @staticmethod
    def _wait_for_dead_holder(registry: Registry, conn: psycopg.Connection, tenant: str,
                              holder: OperationRow | None) -> bool:
        """A holder that ran on this host and whose process is gone (killed a moment ago): the server lets go of
        its session as soon as it notices; wait for that (bounded) rather than refuse. False: it is alive."""
        h = (holder.holder if holder else None) or {}
        wait = DEAD_HOLDER_WAIT_S
        if holder is None:
            wait = 2.0     # no operation recorded yet: a command taking the lease right now, or one killed doing so
        elif h.get("host") != socket.gethostname() or not isinstance(h.get("pid"), int):
            return False
        if holder is not None:
            try:
                os.kill(h["pid"], 0)
                return False                  # alive (or another process now has that pid): not ours to judge
            except ProcessLookupError:
                pass
            except PermissionError:
                return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if conn.execute("SELECT pg_try_advisory_lock(registry.lease_key(%s))", (tenant,)).fetchone()[0]:
                return True
            if holder is None and registry.open_operation(tenant, conn) is not None:
                return False                  # the command taking it recorded its operation: it is running
            time.sleep(0.05)
        return False

    @staticmethod
    def _end_holder(conn: psycopg.Connection, tenant: str) -> None:
        """--take-over: end the registry session that holds the tenant's advisory lock, then take the lock."""
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() AND "
            "((classid::bigint << 32) | objid::bigint) = registry.lease_key(%s)", (tenant,)).fetchall()]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + TAKE_OVER_WAIT_S
        while not conn.execute("SELECT pg_try_advisory_lock(registry.lease_key(%s))", (tenant,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise Refused(f"could not take over the lease of '{tenant}': its holder's registry session did not end "
                              f"within {TAKE_OVER_WAIT_S:.0f}s (pids {pids}); nothing was changed")
            time.sleep(0.1)

    # ---------------------------------------------------------------------------------------------- fenced

    @contextmanager
    def fenced(self) -> Iterator[psycopg.Connection]:
        """A registry transaction that commits only while this process still holds the lease."""
        try:
            with self.conn.transaction():
                row = self.conn.execute("SELECT 1 FROM registry.leases WHERE tenant_id = %s AND operation = %s AND "
                                        "token = %s FOR SHARE", (self.tenant, self.op.id, self.token)).fetchone()
                if row is None:
                    raise LeaseLost(f"operation {self.op.id} no longer holds the lease of '{self.tenant}' (another "
                                    "command took it over); this run stops here")
                yield self.conn
        except psycopg.OperationalError as exc:
            raise LeaseLost(f"operation {self.op.id} lost its registry session ({str(exc).splitlines()[0] if str(exc) else 'closed'}"
                            "); this run stops here: run the same command again to resume") from None

    def check(self) -> None:
        with self.fenced():
            pass

    def record(self, phase: str, event: str, detail: dict[str, Any] | None = None) -> None:
        with self.fenced() as c:
            c.execute("INSERT INTO registry.journal (operation, phase, event, detail) VALUES (%s, %s, %s, %s)",
                      (self.op.id, phase, event, json.dumps(detail or {}, default=str)))
            if event in ("started", "done"):
                c.execute("UPDATE registry.operations SET phase = %s, updated_at = now() WHERE id = %s",
                          (phase if event == "started" else f"{phase} done", self.op.id))

    def journal(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [tuple(r) for r in self.conn.execute("SELECT phase, event, detail FROM registry.journal WHERE operation = %s "
                                                    "ORDER BY seq", (self.op.id,)).fetchall()]

    def settings(self, **changes: Any) -> dict[str, Any]:
        """The operation's settings, after recording `changes` (once known) for later runs."""
        if changes:
            with self.fenced() as c:
                c.execute("UPDATE registry.operations SET settings = settings || %s WHERE id = %s",
                          (json.dumps(changes, default=str), self.op.id))
        self.op.settings = self.conn.execute("SELECT settings FROM registry.operations WHERE id = %s",
                                             (self.op.id,)).fetchone()[0]
        return self.op.settings

    def set_abort_command(self, command: str | None) -> None:
        """Once past the point of no return an operation can no longer be aborted: its abort command goes."""
        with self.fenced() as c:
            c.execute("UPDATE registry.operations SET abort_command = %s WHERE id = %s", (command, self.op.id))

    # ----------------------------------------------------------------------------------- cleanup records

    def created(self, kind: str, ref: dict[str, Any], policy: str) -> int:
        """Record, before creating it, something this operation creates (or must remove): `policy` says when it
        goes -- on abort, on success, or always. Idempotent: the same record is returned on a re-run."""
        with self.fenced() as c:
            found = c.execute("SELECT seq FROM registry.cleanup WHERE operation = %s AND kind = %s AND ref = %s",
                              (self.op.id, kind, json.dumps(ref, sort_keys=True))).fetchone()
            if found:
                return found[0]
            seq = c.execute("SELECT coalesce(max(seq), 0) + 1 FROM registry.cleanup WHERE operation = %s",
                            (self.op.id,)).fetchone()[0]
            c.execute("INSERT INTO registry.cleanup (operation, seq, kind, ref, policy) VALUES (%s, %s, %s, %s, %s)",
                      (self.op.id, seq, kind, json.dumps(ref, sort_keys=True), policy))
            return seq

    def pending(self, policies: tuple[str, ...]) -> list[CleanupRecord]:
        """Records not yet carried out, last created first."""
        rows = self.conn.execute("SELECT operation, seq, kind, ref, policy, done_at IS NOT NULL FROM registry.cleanup "
                                 "WHERE operation = %s AND done_at IS NULL AND policy = ANY(%s) ORDER BY seq DESC",
                                 (self.op.id, list(policies))).fetchall()
        return [CleanupRecord(*r) for r in rows]

    def cleaned(self, seq: int) -> None:
        with self.fenced() as c:
            c.execute("UPDATE registry.cleanup SET done_at = now() WHERE operation = %s AND seq = %s", (self.op.id, seq))

    # --------------------------------------------------------------------------------------------- release

    def finish(self, status: str, message: str | None = None) -> None:
        """The operation is over (done or aborted): its lease goes, the tenant is free."""
        with self.fenced() as c:
            c.execute("UPDATE registry.operations SET status = %s, message = %s, abort_command = CASE WHEN %s = 'done' "
                      "THEN NULL ELSE abort_command END, finished_at = now(), updated_at = now() WHERE id = %s",
                      (status, message, status, self.op.id))
            c.execute("UPDATE registry.tenants SET operation = NULL WHERE id = %s AND operation = %s", (self.tenant, self.op.id))
            c.execute("DELETE FROM registry.leases WHERE tenant_id = %s AND operation = %s", (self.tenant, self.op.id))
        self._close()

    def pause(self, status: str = "running", message: str | None = None) -> None:
        """This run stops and the operation stays unfinished (waiting for a window, or failed): the lease row
        stays with it, this process lets go of the lock."""
        try:
            with self.fenced() as c:
                c.execute("UPDATE registry.operations SET status = %s, message = %s, updated_at = now() WHERE id = %s",
                          (status, message, self.op.id))
        except (LeaseLost, psycopg.Error):
            pass
        self._close()

    def forget(self) -> None:
        """A new operation refused before it changed anything: no trace of it stays, as if it never started."""
        with self.fenced() as c:
            c.execute("DELETE FROM registry.leases WHERE operation = %s", (self.op.id,))
            c.execute("DELETE FROM registry.cleanup WHERE operation = %s", (self.op.id,))
            c.execute("DELETE FROM registry.journal WHERE operation = %s", (self.op.id,))
            c.execute("UPDATE registry.tenants SET operation = NULL WHERE operation = %s", (self.op.id,))
            c.execute("DELETE FROM registry.operations WHERE id = %s", (self.op.id,))
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.conn.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            pass
        self.conn.close()
