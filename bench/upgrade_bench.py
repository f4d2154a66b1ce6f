"""Benchmark of `tenancy upgrade` end to end, as a user runs it, with the application writing throughout.

Per run, fresh: a throwaway PostgreSQL (tests/pg.py) with a pool database where the moved tenant has ROWS rows
across the sample schema (a neighbour has ROWS/10), three empty databases for the tenant's own postgres-1..3, a
registry naming every database (no DSN is given to the command), the Firestore and GCS API servers
(tests/servers.py) holding DOCUMENTS documents and OBJECTS objects of the tenant, and the platform deployed by
the offline engine. Then `tier_move.upgrade(... --to standard --method METHOD)` runs while an application
writer in a process of its own follows the client contract (`tenancy.client.Router`): PostgreSQL rows, documents and objects, a thread each,
each write routed through the registry and retried when refused.

Reported per run: the freeze the writer saw (per kind, the longest gap between two of its committed writes that
overlaps the window from the registry's frozen to the end of the switch; the worst kind counted), apart from it
the longest gap anywhere in the move (a store that answers slowly while the move reads it shows there, not as a
refusal), the command's own figure (`freeze_seconds`: registry frozen to registry switched), the time of each
phase, the rows / documents / objects the command moved, and the check that every committed write is where the
registry points at the end, with its last value (the run fails otherwise). With
several runs per method: the medians.

    .venv/bin/python bench/upgrade_bench.py [--rows 1000000] [--documents 10000] [--objects 1000]
                                            [--methods online,copy] [--runs 3] [--json FILE]
                                            [--rates rows=100,documents=25,objects=5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_bench import TABLES, new_target, populate, run_raw, tenant_rows  # noqa: E402
from tenancy import client, db, naming  # noqa: E402
from tenancy.catalog import parse_catalog  # noqa: E402
from tenancy.engine import OfflineEngine  # noqa: E402
from tenancy.lifecycle import deploy  # noqa: E402
from tenancy.lifecycle import record as rec  # noqa: E402
from tenancy.lifecycle.tenant_data import Reach  # noqa: E402
from tenancy.operations import stores as where  # noqa: E402
from tenancy.operations import tier_move  # noqa: E402
from tenancy.operations.protocol import Context  # noqa: E402
from tenancy.operations.registry import Registry  # noqa: E402
from tenancy.operations.sync import sync  # noqa: E402
from tenancy.stores import firestore as fs  # noqa: E402
from tenancy.stores import objects as obj  # noqa: E402
from tests import pg, servers  # noqa: E402

ENV = "dev"
TENANT = "movingco"
NEIGHBOUR = "stayco"
CATALOG = f"""version: 1
tenants:
  - {{id: {TENANT}, name: Moving, plan: free, admin_email: a@moving.example}}
  - {{id: {NEIGHBOUR}, name: Staying, plan: free, admin_email: a@staying.example}}
"""
KINDS = ("rows", "documents", "objects")


# ------------------------------------------------------------------------------------------------- the world

def deployed_template(catalog, tmp: Path) -> Path:
    """The platform deployed once by the offline engine; each run starts from a copy of its state."""
    template = tmp / "deployed"
    outcomes = deploy.deploy(OfflineEngine(template, ENV), catalog, ENV, mode="up")
    bad = [(o.stack, o.status, o.message) for o in outcomes if o.status != "ok"]
    if bad:
        raise SystemExit(f"deploying the platform offline failed: {bad}")
    return template


def seed_documents(loc: fs.FirestoreLocation, n: int) -> None:
    """n documents: 40% users, 20% itineraries, 30% notes (under the first half of the itineraries), 10% settings."""
    c = fs.client_for(loc)
    users, trips = int(n * 0.4), int(n * 0.2)
    notes = int(n * 0.3)
    settings = n - users - trips - notes
    paths = [f"users/u{i}" for i in range(users)] + [f"itineraries/i{i}" for i in range(trips)]
    paths += [f"itineraries/i{i % max(trips // 2, 1)}/notes/n{i}" for i in range(notes)]
    paths += [f"settings/s{i}" for i in range(settings)]
    for start in range(0, len(paths), 500):
        batch = c.batch()
        for p in paths[start:start + 500]:
            batch.set(c.document(loc.path(p)), {"name": p, "rank": start, "tags": ["a", "b"]})
        batch.commit()


def seed_objects(store: obj.Store, prefix: str, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.write(f"{prefix}files/f{i:05d}.bin", os.urandom(512)), range(n)))


@dataclass
class World:
    server: pg.Server
    firestore: servers.ApiServer
    gcs: servers.ApiServer
    registry: Registry
    engine: OfflineEngine
    catalog: object
    databases: dict[str, str]       # registry name -> database name
    tmp: Path

    def stop(self) -> None:
        self.firestore.stop()
        self.gcs.stop()
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def build(template: Path, catalog, rows: int, documents: int, objects: int, say) -> World:
    tmp = Path(tempfile.mkdtemp(prefix="upgrade-bench-"))
    server = pg.start()
    firestore, gcs = servers.start_firestore(), servers.start_gcs()
    os.environ["FIRESTORE_EMULATOR_HOST"], os.environ["STORAGE_EMULATOR_HOST"] = firestore.host, gcs.host
    names = {"pool-1": "pool", **{f"{TENANT}/postgres-{i}": f"own_{i}" for i in (1, 2, 3)}}
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        for d in [*names.values(), "registry"]:
            c.execute(f'CREATE DATABASE "{d}"')
    db.apply(server.dsn(dbname="pool"))
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_owner LOGIN; ALTER ROLE tenancy_app LOGIN")
    t0 = time.perf_counter()
    populate(server.dsn(dbname="pool"), NEIGHBOUR, max(rows // 10, 4))
    populate(server.dsn(dbname="pool"), TENANT, rows)
    engine_dir = tmp / "state"
    shutil.copytree(template, engine_dir)
    engine = OfflineEngine(engine_dir, ENV)
    deployed = rec.read(engine, ENV)
    registry = Registry.init(server.dsn(dbname="registry"), ENV)
    for name, d in names.items():
        # the superuser: a role with REPLICATION that may set the replication role's login, as --method online needs
        registry.set_database(name, "pool-1" if name == "pool-1" else f"tenant:{TENANT}",
                              where.connection_record(server.dsn(dbname=d)))
    sync(registry, deployed, ENV)
    project = deployed.project
    pooled_loc = fs.location_for(project, naming.pool_firestore(ENV, "pool-1"), TENANT, pooled=True)
    seed_documents(pooled_loc, documents)
    seed_documents(fs.location_for(project, naming.pool_firestore(ENV, "pool-1"), NEIGHBOUR, pooled=True), 10)
    gclient = obj.gcs_client()
    for b in (naming.pool_bucket(ENV, project, "pool-1"), naming.bucket(ENV, TENANT)):
        gclient.create_bucket(b)
    shared = obj.open_store(f"gs://{naming.pool_bucket(ENV, project, 'pool-1')}")
    seed_objects(shared, f"{TENANT}/", objects)
    seed_objects(shared, f"{NEIGHBOUR}/", 3)
    say(f"  populated in {time.perf_counter() - t0:.1f}s: {rows:,} rows, {documents:,} documents, {objects:,} objects")
    return World(server, firestore, gcs, registry, engine, catalog, names, tmp)


# ---------------------------------------------------------------------------------------------- the writer

@dataclass
class Committed:
    at: float           # time.monotonic() when the commit returned
    kind: str
    where: str          # the database / Firestore location / bucket the write went to


class AppWriter:
    """The application: through the client library, a thread per kind at its own rate -- insert or rename a user
    (PostgreSQL), set a user document (Firestore), write an object (GCS) -- each write retried after a refusal
    (`client.Moved`) until it commits. Threads of their own, so a slow store never holds up another's writes."""

    def __init__(self, registry_dsn: str, rates: dict[str, float]):
        self.router = client.Router(registry_dsn, ENV, user="tenancy_app")
        self.rates = rates
        self.log: list[Committed] = []
        self.names: dict = {}                 # user id -> last display name committed
        self.docs: dict[str, str] = {}        # document path (relative) -> last value committed
        self.objs: dict[str, bytes] = {}      # object name (relative) -> last content committed
        self.refused = 0
        self.refusals: list[tuple[float, str, str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.rng = random.Random(7)
        self.pending: dict[str, tuple] = {}    # kind -> the write being retried
        self.threads = [threading.Thread(target=self._loop, args=(k,), daemon=True) for k in KINDS if rates.get(k)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _row(self) -> str:
        name = f"w-{uuid.uuid4().hex[:8]}"
        with self.router.transaction(TENANT, "app.users") as c:
            if self.names and self.rng.random() < 0.5:
                uid = self.rng.choice(list(self.names))
                if c.execute("UPDATE app.users SET display_name = %s WHERE id = %s", (name, uid)).rowcount != 1:
                    raise AssertionError(f"user {uid}, committed earlier, is missing where the registry points")
            else:
                uid = c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) RETURNING id",
                                (TENANT, f"{name}@x.example", name)).fetchone()[0]
            there = c.info.dbname
        self.names[uid] = name
        return there

    def _document(self) -> str:
        # A refused write is written again as it was (the contract: it may have reached the old place late).
        rel, value = self.pending.pop("documents", None) or (f"users/w{self.rng.randrange(50)}", uuid.uuid4().hex)
        self.pending["documents"] = (rel, value)
        with self.router.documents(TENANT, rel) as loc:
            fs.client_for(loc).document(loc.path(rel)).set({"name": value})
        self.docs[rel] = value
        del self.pending["documents"]
        return f"{loc.database}/{loc.root}"

    def _object(self) -> str:
        rel, value = self.pending.pop("objects", None) or (f"writer/o{self.rng.randrange(50)}.txt", uuid.uuid4().hex.encode())
        self.pending["objects"] = (rel, value)
        with self.router.objects(TENANT) as (store, prefix):
            store.write(prefix + rel, value)
        self.objs[rel] = value
        del self.pending["objects"]
        return store.url

    def _loop(self, kind: str) -> None:
        period = 1.0 / self.rates[kind]
        write = {"rows": self._row, "documents": self._document, "objects": self._object}[kind]
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                there = write()
                self.log.append(Committed(time.monotonic(), kind, there))
            except client.Moved as exc:
                self.refused += 1
                self.refusals.append((time.monotonic(), kind, str(exc)[:120]))
                time.sleep(0.01)     # retried at once: the writer sees the freeze end when it ends
                continue
            except Exception as exc:   # noqa: BLE001 -- the bench reports it and fails
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                return
            time.sleep(max(period - (time.monotonic() - began), 0.0))

    def halt(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def gaps(self, start: float, end: float) -> dict[str, float]:
        """Per kind, the longest time between two committed writes, over the writes from `start` to `end`
        (plus the last one before and the first one after)."""
        out = {}
        for kind in self.rates:
            times = sorted(c.at for c in self.log if c.kind == kind)
            inside = [t for t in times if start <= t <= end]
            before = [t for t in times if t < start][-1:]
            after = [t for t in times if t > end][:1]
            seq = before + inside + after
            out[kind] = max((b - a for a, b in zip(seq, seq[1:])), default=float("nan"))
        return out


_STATE = ("names", "docs", "objs", "refused", "refusals", "errors")


def _writer_process(registry_dsn: str, rates: dict[str, float], started, stop, out) -> None:
    w = AppWriter(registry_dsn, rates)
    w.start()
    started.set()
    stop.wait()
    w.halt()
    out.send({"log": [(c.at, c.kind, c.where) for c in w.log], **{k: getattr(w, k) for k in _STATE}})


class WriterProcess:
    """The application as it runs in production: a process of its own, so the command's work (hashing, listing,
    in this process) never holds up its writes. Its log comes back when it halts; the clocks compare (both are
    the host's monotonic clock)."""

    gaps = AppWriter.gaps

    def __init__(self, registry_dsn: str, rates: dict[str, float]):
        mp = multiprocessing.get_context("spawn")
        self.rates = rates
        self._started, self._stop = mp.Event(), mp.Event()
        self._recv, send = mp.Pipe(duplex=False)
        self._proc = mp.Process(target=_writer_process, args=(registry_dsn, rates, self._started, self._stop, send),
                                daemon=True)

    def start(self) -> None:
        self._proc.start()
        if not self._started.wait(120):
            raise SystemExit("the application writer did not start")

    def halt(self) -> None:
        self._stop.set()
        if not self._recv.poll(180):
            self._proc.kill()
            raise SystemExit("the application writer did not stop")
        state = self._recv.recv()
        self._proc.join(30)
        self.log = [Committed(*c) for c in state.pop("log")]
        self.__dict__.update(state)


def lost_writes(w: World, writer: WriterProcess) -> list[str]:
    """Committed writes not where the registry points now, with their last value."""
    lost = []
    row = w.registry.tenant(TENANT)
    store = next(s for s, tables in row.stores["postgres"].items() if "app.users" in tables)
    conn_rec = w.registry.database(row.stores["databases"][store]).connection
    with psycopg.connect(w.server.dsn(dbname=conn_rec["dbname"]), autocommit=True) as c:
        found = dict(c.execute("SELECT id, display_name FROM app.users WHERE tenant_id = %s", (TENANT,)).fetchall())
    lost += [f"row {k}" for k, v in writer.names.items() if found.get(k) != v]
    f = row.stores["firestore"]
    loc = fs.FirestoreLocation(f["project"], f["database"], f["root"])
    c = fs.client_for(loc)
    for rel, value in writer.docs.items():
        snap = c.document(loc.path(rel)).get()
        if not snap.exists or snap.to_dict().get("name") != value:
            lost.append(f"document {rel}")
    bucket, _, prefix = row.stores["objects"][len("gs://"):].partition("/")
    store = obj.open_store(f"gs://{bucket}")
    for rel, value in writer.objs.items():
        try:
            if store.read(prefix + rel) != value:
                lost.append(f"object {rel}")
        except obj.ObjectError:
            lost.append(f"object {rel} (missing)")
    return lost


# ------------------------------------------------------------------------------------------------- one run

@dataclass
class Result:
    method: str
    rows: int
    documents: int
    objects: int
    seen_freeze: float
    gaps: dict[str, float]
    command_freeze: float
    total: float
    phases: dict[str, float]
    refused: int
    writes: int
    lost: list[str] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)
    raw_seconds: float = 0.0       # the raw COPY pipe of the same rows, same run
    raw_rows: int = 0
    anywhere: dict[str, float] = field(default_factory=dict)   # per kind, the longest gap anywhere in the move

    @property
    def rows_seconds(self) -> float:
        """The rows' part of the move: sync to switch (replication or copy, every verification, the summaries)."""
        return sum(v for k, v in self.phases.items() if k in ("sync", "freeze", "copy", "verify", "switch"))


def run(template: Path, method: str, rows: int, documents: int, objects: int, rates: dict[str, float], say,
        verbose: bool = False, keep_source: int = 0) -> Result:
    catalog = parse_catalog(CATALOG)
    w = build(template, catalog, rows, documents, objects, say)
    try:
        # The baseline, same data, same run: a bare COPY pipe of the tenant's rows per table (no verification).
        raw_seconds = run_raw(w.server, "pool", new_target(w.server, "raw", TENANT), TENANT)
        raw_rows = tenant_rows(w.server, "raw", TENANT)
        writer = WriterProcess(w.registry.dsn, rates)
        writer.start()
        time.sleep(1.0)
        marks: dict[str, float] = {}
        lines: list[str] = []
        t_start = time.monotonic()
        steps = lambda m: lines.append(f"{time.monotonic() - t_start:8.3f}     . {m}") if "syncing" not in m else None  # noqa: E731
        ctx = Context(ENV, w.registry, w.engine, say=lambda m: lines.append(f"{time.monotonic() - t_start:8.3f} {m}"),
                      step=steps if verbose else None,
                      before_phase=lambda p: marks.setdefault(p, time.monotonic()))
        start = time.monotonic()
        out = tier_move.upgrade(ctx, catalog, TENANT, "standard", reach=Reach({}), method=method,
                                keep_source_days=keep_source)
        end = time.monotonic()
        time.sleep(1.0)
        writer.halt()
        if out.status != ("waiting" if keep_source else "done"):
            raise SystemExit(f"the upgrade ended {out.status}: {out.message}")
        if writer.errors:
            raise SystemExit(f"the application writer failed: {writer.errors}")
        order = [p for p in tier_move.PHASES if p in marks]
        phases = {p: (marks[order[i + 1]] if i + 1 < len(order) else end) - marks[p] for i, p in enumerate(order)}
        # The freeze as the writer lived it: per kind, the longest gap between two committed writes that overlaps
        # the window from the registry's frozen to the end of the switch. And, apart, the longest anywhere in the
        # move (a store answering slowly while the move reads it shows there, not as a refusal).
        after_switch = next((marks[p] for p in order[order.index("switch") + 1:]), end) if "switch" in marks else end
        gaps = writer.gaps(marks["freeze"], after_switch)
        anywhere = writer.gaps(start, end)
        copied = out.detail.get("copied")
        if not copied:     # waiting for its cleanup (--keep-source): what it copied is in the journal
            journal = w.registry.journal(out.operation)
            copied = {k: dict(v) for k, v in next(d for p, e, d in journal if (p, e) == ("copy", "done"))["copied"].items()}
            switched = next(d for p, e, d in journal if (p, e) == ("switch", "done"))
            for name, n in switched.get("rows", {}).items():
                copied[name]["rows"] = n
        moved = {"rows": sum(v.get("rows", 0) for v in copied.values()),
                 "documents": sum(v.get("documents", 0) for v in copied.values()),
                 "objects": sum(v.get("objects", 0) for v in copied.values())}
        if verbose:
            say("\n".join(lines))
            for kind in KINDS:
                times = [c.at for c in writer.log if c.kind == kind and start <= c.at <= end]
                if len(times) > 1:
                    a, b = max(zip(times, times[1:]), key=lambda ab: ab[1] - ab[0])
                    said = [f"{t - t_start:.3f} {k} {m}" for t, k, m in writer.refusals if a <= t <= b and k == kind]
                    say(f"  {kind}: longest gap {a - t_start:.3f} .. {b - t_start:.3f}; refusals in it: "
                        f"{len(said)} {said[:2]} .. {said[-2:]}")
            say(json.dumps(copied, indent=1, default=str)[:6000])
        lost = lost_writes(w, writer)
        last = {c.kind: c.where for c in writer.log}
        return Result(method, moved["rows"], moved["documents"], moved["objects"], max(gaps.values()), gaps,
                      out.detail.get("freeze_seconds") or 0.0, end - start, phases, writer.refused, len(writer.log),
                      lost, last, raw_seconds, raw_rows, anywhere)
    finally:
        w.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--documents", type=int, default=10_000)
    ap.add_argument("--objects", type=int, default=1_000)
    ap.add_argument("--methods", default="online,copy")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rates", default="rows=100,documents=25,objects=5",
                    help="the application's writes per second, per kind")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--verbose", action="store_true", help="the command's own lines, timed, and what it copied")
    ap.add_argument("--keep-source", type=int, default=0, metavar="DAYS",
                    help="the command's --keep-source: its cleanup then waits (the sources are not emptied)")
    a = ap.parse_args(argv)
    say = lambda m: print(m, flush=True)  # noqa: E731
    rates = {k: float(v) for k, v in (x.split("=") for x in a.rates.split(","))}
    if set(rates) - set(KINDS):
        ap.error(f"--rates: kinds are {', '.join(KINDS)}")
    catalog = parse_catalog(CATALOG)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="upgrade-bench-deployed-") as tmp:
        template = deployed_template(catalog, Path(tmp))
        for method in a.methods.split(","):
            for i in range(a.runs):
                say(f"{method} run {i + 1}/{a.runs}: {a.rows:,} rows, {a.documents:,} documents, {a.objects:,} objects")
                r = run(template, method, a.rows, a.documents, a.objects, rates, say, a.verbose, a.keep_source)
                results.append(r)
                say(f"  longest gap anywhere in the move {max(r.anywhere.values()):.3f}s "
                    f"({', '.join(f'{k} {v:.3f}s' for k, v in r.anywhere.items())})")
                say(f"  freeze seen by the writer {r.seen_freeze:.3f}s ({', '.join(f'{k} {v:.3f}s' for k, v in r.gaps.items())}); "
                    f"command's figure {r.command_freeze:.3f}s; total {r.total:.1f}s; moved {r.rows:,} rows, "
                    f"{r.documents:,} documents, {r.objects:,} objects; {r.writes} writes committed, {r.refused} refused, "
                    f"{len(r.lost)} lost")
                say("  phases: " + ", ".join(f"{p} {s:.2f}s" for p, s in r.phases.items()))
                say(f"  rows: sync to switch {r.rows_seconds:.1f}s; raw COPY pipe of the same {r.raw_rows:,} rows "
                    f"{r.raw_seconds:.1f}s ({r.rows_seconds / r.raw_seconds:.2f}x); the copy phase "
                    f"{r.phases.get('copy', 0):.1f}s ({r.phases.get('copy', 0) / r.raw_seconds:.2f}x)")
                if r.raw_rows != a.rows:
                    raise SystemExit(f"the raw COPY pipe moved {r.raw_rows} rows, not the tenant's {a.rows}")
                if r.lost:
                    raise SystemExit(f"committed writes lost: {r.lost[:10]}")
                if r.rows < a.rows or r.documents < a.documents or r.objects < a.objects:
                    raise SystemExit(f"the command moved {r.rows} rows, {r.documents} documents, {r.objects} objects: "
                                     f"fewer than the tenant holds")
    print()
    print("| method | rows | freeze seen by the writer (median) | longest gap anywhere in the move | command's figure | total "
          "| rows: sync to switch | copy phase | raw COPY pipe | runs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in a.methods.split(","):
        rs = [r for r in results if r.method == method]
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        print(f"| {method} | {a.rows:,} | {med(lambda r: r.seen_freeze):.3f} s | "
              f"{med(lambda r: max(r.anywhere.values())):.3f} s | {med(lambda r: r.command_freeze):.3f} s "
              f"| {med(lambda r: r.total):.1f} s | {med(lambda r: r.rows_seconds):.1f} s "
              f"({med(lambda r: r.rows_seconds / r.raw_seconds):.2f}x raw) | {med(lambda r: r.phases.get('copy', 0)):.1f} s "
              f"({med(lambda r: r.phases.get('copy', 0) / r.raw_seconds):.2f}x raw) | {med(lambda r: r.raw_seconds):.1f} s "
              f"| {len(rs)} |")
    if a.json:
        Path(a.json).write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
