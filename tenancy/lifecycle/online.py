"""The online method of a tier move's PostgreSQL step: the tenant's rows travel by logical replication.

A tier move (tenancy/operations/tier_move.py) freezes the tenant's writes once for all of its stores. With the
copy method the rows are copied inside that freeze; with this one they are copied before it, while the
tenant keeps writing, and the freeze only waits for the last changes and compares the rows changed since
the last comparison (tenancy/stores/replication/, tenancy/stores/replica_verify.py):

    sync()      before the freeze: replication started (or found running), the initial copy waited for,
                every row of the replicated copy compared with the source, then the changed rows until few
                remain. Returns the journal's detail.
    switch()    inside the freeze: the source's draining freeze (idempotent with the move's own), the
                remaining WAL applied, the changed rows compared, sequences moved, subscription and slot
                dropped. Neither registry changes: the move cuts over and unfreezes. Returns the journal's
                detail, with the source's summary as verified (`source`) for `cleanup`.
    cleanup()   the move's publication and any tracking left dropped; with `expect` (the `source` summary),
                the source's rows deleted when they still match it.
    abort()     before the move cuts over: replication objects dropped, the target's copy deleted, both
                registries back to their states from before `sync`.

Each is safe to run again after a kill at any point: the replication objects and registry states say how far
it got. None leaves a replication slot, publication, subscription or tracking trigger behind once `cleanup`
or `abort` returned.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from tenancy.lifecycle import Refused
from tenancy.naming import DATABASE_USERS
from tenancy.stores import Summary
from tenancy.stores import postgres as pg
from tenancy.stores import replication as rep

Say = Callable[[str], None]
_, _, REPLICATION_USER = DATABASE_USERS   # owner, runtime, replication


def _rounded(seconds: float) -> float:
    return round(seconds, 3)


class OnlinePostgresMove:
    """One tenant's rows from `source_dsn` to `target_dsn` through logical replication, in the steps a tier
    move runs around its freeze. `replication_conninfo` is how the target's subscription reaches the source
    (user tenancy_replication; the move sets its password); `tables` None means every isolated table.
    `operation` is the caller's id of this move of this pair: the replication objects are named after it."""

    method = "online"

    def __init__(self, source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None,
                 replication_conninfo: str, say: Say | None = None, *, operation: str, plan: str | None = None,
                 model: str | None = None, sync_timeout: float = 3600.0, catchup_timeout: float = 60.0,
                 lock_timeout: str = "30s", checkpoint: rep.Checkpoint | None = None):
        self.operation = operation
        self.source_dsn, self.target_dsn, self.tenant = source_dsn, target_dsn, tenant
        self.tables = list(tables) if tables else None
        self.replication_conninfo = replication_conninfo
        self.say = say or (lambda m: None)
        self.plan, self.model = plan, model
        self.sync_timeout, self.catchup_timeout, self.lock_timeout = sync_timeout, catchup_timeout, lock_timeout
        self.checkpoint = checkpoint

    @property
    def name(self) -> str:
        return rep.names(self.operation).base

    def start(self) -> None:
        """Replication started (or found running): the initial copy runs in the servers from here on."""
        n = rep.start(self.source_dsn, self.target_dsn, self.tenant, self.tables, self.replication_conninfo,
                      move=self.operation, plan=self.plan, model=self.model, checkpoint=self.checkpoint)
        self._started = n
        self.say(f"  replicating the rows of '{self.tenant}' ({n.base}); the tenant keeps writing")

    def sync(self) -> dict[str, Any]:
        if getattr(self, "_started", None) is None:
            self.start()
        n = self._started
        lag = rep.wait_synced(self.source_dsn, self.target_dsn, self.tenant, move=self.operation,
                              timeout=self.sync_timeout, checkpoint=self.checkpoint)
        self.say(f"  initial copy done; {lag} bytes of changes behind")
        pre = rep.preverify(self.source_dsn, self.target_dsn, self.tenant, self.tables, move=self.operation,
                            timeout=self.catchup_timeout, checkpoint=self.checkpoint)
        fp = pre.full_pass
        self.say("  replicated copy verified: " + (f"every row compared over {fp.buckets} key ranges in {fp.seconds:.1f}s, "
                                                   if fp else "an earlier full comparison still holds, ")
                 + f"{pre.recorded} changed rows left for the freeze")
        return {"method": self.method, "replication": n.base, "lag_bytes": lag, "preverify": pre.to_json()}

    def converge(self) -> dict[str, Any]:
        """Just before the freeze: the rows changed since the last comparison compared again, so that the freeze
        has only the last moment's changes to look at (no full pass: the earlier one still holds)."""
        pre = rep.preverify(self.source_dsn, self.target_dsn, self.tenant, self.tables, move=self.operation,
                            timeout=self.catchup_timeout, checkpoint=self.checkpoint)
        return {"recorded": pre.recorded, "seconds": round(pre.seconds, 3)}

    def switch(self, summarise: bool = True) -> dict[str, Any]:
        """`summarise=False`: the source's summary is left for `source_summary`, after the caller's freeze."""
        r = rep.switch(self.source_dsn, self.target_dsn, self.tenant, self.tables, move=self.operation,
                       lock_timeout=self.lock_timeout, catchup_timeout=self.catchup_timeout, cutover=False,
                       summarise=summarise, checkpoint=self.checkpoint)
        if r.already_switched:
            self.say(f"  the rows of '{self.tenant}' had already switched")
        else:
            self.say(f"  caught up in {r.catchup_seconds:.2f}s, {r.keys_rechecked} changed rows compared in "
                     f"{r.verify_seconds:.2f}s" + (f"; {sum(r.rows.values())} rows verified" if r.rows else ""))
        return {"method": self.method, "rows": r.rows, "already_switched": r.already_switched,
                "catchup_seconds": _rounded(r.catchup_seconds), "verify_seconds": _rounded(r.verify_seconds),
                "keys_rechecked": r.keys_rechecked, "freeze_seconds": _rounded(r.freeze_seconds),
                "full_pass_in_freeze": r.full_pass_in_freeze is not None, "source": r.source_summary.to_json() if r.source_summary else None}

    def source_summary(self) -> Summary:
        """The source's rows as verified: taken once the source is read-only (no write reaches it after the
        freeze), so it is the summary of the snapshot the switch compared."""
        return pg.summary(self.source_dsn, self.tenant, self.tables)

    def cleanup(self, expect: Summary | dict | None = None) -> dict[str, Any]:
        dropped = rep.cleanup(self.source_dsn, self.target_dsn, self.tenant, move=self.operation)
        detail: dict[str, Any] = {"dropped": dropped}
        if expect is not None:
            summary = expect if isinstance(expect, Summary) else Summary.from_json(expect)
            detail["deleted_rows"] = pg.delete(self.source_dsn, self.tenant, expect=summary, tables=self.tables)
            self.say(f"  deleted {detail['deleted_rows']} rows of '{self.tenant}' at the source")
        return detail

    def abort(self) -> list[str]:
        done = rep.abort(self.source_dsn, self.target_dsn, self.tenant, move=self.operation)
        for line in done:
            self.say(f"  {line}")
        return done


def leftovers(dsns: list[str], owned: set[str] | None = None) -> list[tuple[str, rep.Orphan]]:
    """(server, orphan) for every replication slot, publication, subscription and tracking trigger of an online
    move in these databases that no unfinished operation owns (`owned`: their replication names, from the
    registry's cleanup records: `owned_names`). Slots and
    subscriptions belong to a server, so two databases of one server report them once."""
    owned = set(owned or ())
    found: dict[tuple[str, str, str, str], tuple[str, rep.Orphan]] = {}
    for dsn in dsns:
        server = rep.database_of(dsn).rsplit("/", 1)[0]
        for o in rep.orphans(dsn, owned):
            found.setdefault((server, o.kind, o.name, o.database), (server, o))
    return [found[k] for k in sorted(found)]


# --- in a tier move --------------------------------------------------------------------------------------

METHODS = ("auto", "online", "copy")


def replication_conninfo(source_dsn: str, given: str | None = None) -> str:
    """How the target's server reaches the source as the replication role: `given`, else the source DSN with
    user tenancy_replication. Either way without a password: each move sets the role's own for its duration."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if given:
        return given
    params = {k: v for k, v in conninfo_to_dict(source_dsn).items() if k != "password"}
    params["user"] = REPLICATION_USER
    return make_conninfo(**params)


def choose(pairs: list, method: str, replication: Mapping[str, str], say: Say) -> dict[str, dict[str, str]]:
    """For each PostgreSQL pair of a tier move ({name, source and target handles with dsn and tables}): moved
    "online", or copied inside the freeze ("copy") and why. `auto` takes online where it can and says why
    not; `online` refuses a pair that cannot be."""
    out: dict[str, dict[str, str]] = {}
    for p in pairs:
        if method == "copy":
            out[p.name] = {"method": "copy", "why": "--method copy"}
            continue
        why = rep.unavailable(p.source.dsn, p.target.dsn, replication_conninfo(p.source.dsn, replication.get(p.source.name)),
                              list(p.source.tables))
        if why is None:
            out[p.name] = {"method": "online"}
        elif method == "online":
            raise Refused(f"{p.name}: the rows cannot move online: {why}. Fix that, or run with --method copy (the rows "
                          "then copy inside the write freeze), or --abort")
        else:
            say(f"  {p.name}: rows copy inside the write freeze: {why}")
            out[p.name] = {"method": "copy", "why": why}
    return out


def mover(pair, tenant: str, replication: Mapping[str, str], say: Say, *, operation: str, **kw: Any) -> OnlinePostgresMove:
    """The online move of one PostgreSQL pair of a tier move; `operation` is the tier move's id, and the pair's
    own operation id adds the pair's name."""
    return OnlinePostgresMove(pair.source.dsn, pair.target.dsn, tenant, list(pair.source.tables),
                              replication_conninfo(pair.source.dsn, replication.get(pair.source.name)), say,
                              operation=f"{operation}/{pair.name}", **kw)


def owned_names(registry) -> set[str]:
    """Replication names of every unfinished operation's online pairs (its cleanup records of kind replication)."""
    out = set()
    for op in registry.unfinished():
        for r in registry.cleanup_records(op.id):
            if r.kind == "replication" and not r.done:
                out.add(rep.names(f"{op.id}/{r.ref['pair']}").base)
    return out
