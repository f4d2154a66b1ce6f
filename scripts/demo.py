"""`make demo`: from a clone to a tenant walked through its whole life, on this machine, in a few minutes.

    python scripts/demo.py up [--dir DIR]      # make demo       (DIR: .demo, git-ignored)
    python scripts/demo.py down [--dir DIR]    # make demo-down

`up` starts a PostgreSQL server and the Firestore and GCS API servers on free ports of 127.0.0.1 (tenancy/localservers.py,
the same code the tests use), each detached with its pid under DIR/pids; creates the environment's registry and the
databases and records them in the registry, so that no later command takes a DSN; deploys the shipped tenants.yaml
with the offline engine; registers the pooled tenants in their pool shard's database and seeds rows, documents and
objects for them; then walks one new tenant through onboarding, an upgrade, a downgrade, a suspension and resumption
and its offboarding -- and, where `tenancy restore` exists, its restore from the offboarding's archive -- while a
sample application (scripts/sample_app.py) writes its users through the client library.
Each step prints the commands it runs, as one would type them, their output, and the write freeze the application
measured: its longest gap between two committed writes across the step. The servers keep running afterwards (`source
DIR/env` points the command line at them); `down` stops each one by its pid and removes DIR.

The offline engine runs the stack programs but creates no cloud resource: what a deployed stack would have made for
the steps to use -- the tenant databases' Cloud SQL instances, the buckets, the SQL job's registrations -- is made here
by the step that says so. `down` needs only the Python standard library.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
TENANCY = ROOT / ".venv" / "bin" / "tenancy"
ENV = "dev"
TENANT = "soylent"                  # the tenant the demo onboards and walks through its life
RESTORE_HELP = "tenancy restore --help"


class DemoFailed(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ down

def _cmdline(pid: int) -> str | None:
    """The command line of a live process, None when there is none (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None


def running(directory: Path) -> dict[str, int]:
    """Name -> pid of each server this demo started that still runs (its pid file, and a process that is still it)."""
    out = {}
    for f in sorted((directory / "pids").glob("*.pid")):
        try:
            pid_text, marker, _ = f.read_text().split("\n", 2)
            pid = int(pid_text)
        except ValueError:
            continue
        line = _cmdline(pid)
        if line is not None and marker in line:
            out[f.stem] = pid
    return out


def down(directory: Path) -> int:
    if not directory.exists():
        print(f"no demo in {_shown(directory)}: nothing to stop")
        return 0
    for name, pid in running(directory).items():
        sig = int((directory / "pids" / f"{name}.pid").read_text().split("\n")[2] or signal.SIGTERM)
        os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while _cmdline(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if _cmdline(pid) is not None:
            os.kill(pid, signal.SIGKILL)
        print(f"stopped {name} (pid {pid})")
    data = directory / "postgres"
    if data.is_symlink():       # the server's data lives where the postgres system user can reach it
        shutil.rmtree(data.resolve(), ignore_errors=True)
    shutil.rmtree(directory)
    print(f"removed {_shown(directory)}")
    return 0


def _shown(path: Path) -> str:
    """A path as a user in the repository would type it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# -------------------------------------------------------------------------------------------------- up

class Demo:
    def __init__(self, directory: Path):
        self.dir = directory
        self.state = directory / "state"
        self.catalogue = directory / "tenants.yaml"
        self.archives = directory / "archives"
        self.env = dict(os.environ)
        self.env.pop("TENANCY_ENV", None)
        self.apps: dict = {}
        self.rows: list[tuple[str, str, str, str]] = []    # (step, command, application's longest gap, operation's)
        self.number = 0
        self.total = 13
        self.began = time.monotonic()

    # ------------------------------------------------------------------------------------------- printing

    def header(self, title: str) -> float:
        self.done()
        self.number += 1
        print(f"\n== {self.number}/{self.total} {title} " + "=" * max(3, 100 - len(title)), flush=True)
        self.began = time.monotonic()
        return self.began

    def done(self) -> None:
        if self.number:
            print(f"   ({time.monotonic() - self.began:.1f}s)", flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def tenancy(self, *args: str) -> str:
        """Run `.venv/bin/tenancy ARGS` as a user would, print it and its output; its output."""
        print(f"   $ .venv/bin/tenancy {shlex.join(args)}", flush=True)
        out = []
        with subprocess.Popen([str(TENANCY), *args], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as p:
            for line in p.stdout:          # as it comes: a tier move reports each phase while it runs
                out.append(line)
                print(f"     {line.rstrip()}", flush=True)
        if p.returncode != 0:
            raise DemoFailed(f"`tenancy {' '.join(args[:2])}` exited with {p.returncode}")
        return "".join(out)

    def where(self) -> list[str]:
        return ["--tenants", _shown(self.catalogue), "--engine", "offline", "--state", _shown(self.state), "--env", ENV]

    # ---------------------------------------------------------------------------------------------- steps

    def run(self) -> None:
        started = time.monotonic()
        self.servers()
        self.registry()
        self.deploy()
        self.register()
        self.seed()
        self.onboard()
        self.move("standard")
        self.move("free")
        self.suspend_and_resume()
        self.offboard()
        self.restore()
        self.finish(started)

    def servers(self) -> None:
        from tenancy import localservers

        self.header("local servers: PostgreSQL, the Firestore API and the GCS API on free ports")
        (self.dir / "pids").mkdir(parents=True)
        (self.dir / "logs").mkdir()
        base = self.dir / "postgres"
        if os.geteuid() == 0 and subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.dir)],
                                                capture_output=True).returncode != 0:
            import tempfile     # a directory above DIR is private: the data goes where the postgres user can write
            real = Path(tempfile.mkdtemp(prefix="tenancy-demo-"))
            os.chmod(real, 0o755)
            base.symlink_to(real)
            base = real / "server"
        pg = localservers.start(base=base)
        self._pid("postgres", pg.pid, "postgres", signal.SIGINT)     # a fast shutdown
        self.pg = pg
        fs = localservers.start_firestore(log=self.dir / "logs" / "firestore.log")
        self._pid("firestore", fs.pid, "firestore-emulator", signal.SIGTERM)
        gcs = localservers.start_gcs(log=self.dir / "logs" / "gcs.log")
        self._pid("gcs", gcs.pid, "gcp-storage-emulator", signal.SIGTERM)
        registry = pg.dsn(dbname="tenancy_registry")
        exports = {"TENANCY_REGISTRY": registry, "FIRESTORE_EMULATOR_HOST": fs.host, "STORAGE_EMULATOR_HOST": gcs.host}
        self.env.update(exports)
        os.environ.update(exports)
        (self.dir / "env").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items()))
        self.say(f"PostgreSQL        127.0.0.1:{pg.port}   (data in {_shown(self.dir / 'postgres')}, pid {pg.pid})")
        self.say(f"Firestore API     {fs.host}   (pid {fs.pid})")
        self.say(f"Cloud Storage API {gcs.host.removeprefix('http://')}   (pid {gcs.pid})")
        self.say(f"every command below runs with these (`source {_shown(self.dir / 'env')}` to run your own):")
        for k, v in exports.items():
            self.say(f"  export {k}={shlex.quote(v)}")

    def _pid(self, name: str, pid: int, marker: str, sig: int) -> None:
        (self.dir / "pids" / f"{name}.pid").write_text(f"{pid}\n{marker}\n{int(sig)}")

    def database(self, name: str) -> str:
        """The local database standing for the registry's database `name` ('pool-1', 'soylent/postgres-1')."""
        return f"{ENV}_{name.replace('/', '_').replace('-', '_')}"

    def registry(self) -> None:
        import psycopg

        self.header("the registry of record, and the databases it records")
        names = ["pool-1", *(f"{TENANT}/postgres-{i}" for i in (1, 2, 3))]
        with psycopg.connect(self.pg.dsn(), autocommit=True) as c:
            for db in ["tenancy_registry", *map(self.database, names)]:
                c.execute(f'CREATE DATABASE "{db}"')
        self.say(f"created the databases tenancy_registry, {', '.join(map(self.database, names))} (as postgres); in the "
                 f"cloud, pool-1 is the pooled Cloud SQL instance and {TENANT}/postgres-N are the instances its stack "
                 "creates when it upgrades")
        self.tenancy("registry", "init", "--env", ENV)
        for name in names:
            # The server's superuser: operations apply the tenancy SQL to new databases and create its roles.
            self.tenancy("registry", "database", name, "--dsn", self.pg.dsn(dbname=self.database(name)), "--env", ENV)
        self.say("from here on no command is given a DSN: each finds its databases through the registry")

    def deploy(self) -> None:
        self.header("deploy the shipped catalogue with the offline engine")
        self.tenancy("up", "--engine", "offline", "--state", _shown(self.state), "--env", ENV)

    def register(self) -> None:
        import psycopg

        self.header("register the pooled tenants in pool-1, as the platform's SQL job would")
        self.say("the offline engine runs no Kubernetes Job: the tenancy SQL, the tenants pool-1 holds and its identity "
                 "marker are applied by hand")
        self.tenancy("db", "apply", "--as", "pool-1", "--engine", "offline", "--state", _shown(self.state), "--env", ENV)
        with psycopg.connect(self.pg.dsn(), autocommit=True) as c:
            c.execute("ALTER ROLE tenancy_app LOGIN")
            c.execute("ALTER ROLE tenancy_registry_reader LOGIN")
        self.say("the application connects as tenancy_app and reads the registry as tenancy_registry_reader: here they "
                 "may log in without a password (ALTER ROLE ... LOGIN); on Cloud SQL each is a user whose password is "
                 "in Secret Manager")

    def seed(self) -> None:
        self.header("sample data: rows, documents and objects of the pooled tenants")
        deployed = self.deployed()
        self.buckets(deployed)
        self.seeded: dict[str, dict] = {}      # tenant -> what was seeded, as read back
        for t in deployed.catalog.tenants:
            if t.model.value != "pooled" or not t.in_directory:
                continue
            if t.state.value != "active":
                self.say(f"{t.id}: {t.state.value}: its database refuses its writes; nothing seeded")
                continue
            self.seeded[t.id] = self.seed_tenant(t.id, deployed.directory[t.id])

    def deployed(self):
        from tenancy.engine import OfflineEngine
        from tenancy.lifecycle import record as rec

        return rec.read(OfflineEngine(str(self.state), ENV), ENV)

    def buckets(self, deployed) -> None:
        from tenancy import naming
        from tenancy.stores.objects import gcs_client

        client = gcs_client()
        names = sorted({e["placement"]["bucket"] for e in deployed.directory.values() if e.get("placement", {}).get("bucket")}
                       | {naming.bucket(ENV, TENANT)})
        for name in names:
            client.create_bucket(name)
        self.say(f"created the buckets the stacks declare (the offline engine creates none): {', '.join(names)}")

    def seed_tenant(self, tenant: str, entry: dict) -> dict:
        """Users, itineraries, comments and likes through the client library; documents; objects. What was written."""
        from tenancy import client

        router = client.Router(self.reader_dsn(), ENV, user="tenancy_app")
        with router.transaction(tenant, "app.users") as c:
            for i in range(3):
                uid = c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) RETURNING id",
                                (tenant, f"user{i}@{tenant}.example", f"User {i}")).fetchone()[0]
                iid = c.execute("INSERT INTO app.itineraries (tenant_id, owner_id, title) VALUES (%s, %s, %s) RETURNING id",
                                (tenant, uid, f"Trip {i}")).fetchone()[0]
                c.execute("INSERT INTO app.comments (tenant_id, itinerary_id, author_id, body) VALUES (%s, %s, %s, %s)",
                          (tenant, iid, uid, "looks great"))
                c.execute("INSERT INTO app.likes (tenant_id, itinerary_id, user_id) VALUES (%s, %s, %s)", (tenant, iid, uid))
        documents = {**{f"users/u{i}": {"name": f"User {i}", "rank": i} for i in range(3)},
                     "itineraries/i0": {"title": "Trip 0"}, "itineraries/i0/notes/n0": {"text": "pack light"},
                     "settings/main": {"theme": "dark"}}
        objects = {"avatars/u0.png": f"\x89PNG avatar of {tenant}".encode(), "docs/trip.pdf": f"%PDF trip of {tenant}".encode()}
        docs, store, prefix = self._stores(entry)
        batch = docs.batch()
        for path, fields in documents.items():
            batch.set(docs.document(self._doc(entry, path)), fields)
        batch.commit()
        for name, data in objects.items():
            store.write(prefix + name, data)
        seeded = self.read_back(tenant, entry, documents, objects)
        where = entry["stores"]["firestore"]
        self.say(f"{tenant}: {seeded['rows']} rows (users, itineraries, comments, likes) in pool-1, {len(documents)} "
                 f"documents under {where['database']}/{where['root']}, {len(objects)} objects under "
                 f"{entry['stores']['objects']}")
        return seeded

    @staticmethod
    def _stores(entry: dict):
        """(a Firestore client of the tenant's document database, its object store, the tenant's object prefix)."""
        from google.cloud import firestore

        from tenancy.stores.objects import open_store

        where = entry["stores"]["firestore"]
        bucket, prefix = entry["stores"]["objects"].removeprefix("gs://").split("/", 1)
        return firestore.Client(project=where["project"], database=where["database"]), open_store(f"gs://{bucket}"), prefix

    @staticmethod
    def _doc(entry: dict, path: str) -> str:
        root = entry["stores"]["firestore"]["root"]
        return f"{root}/{path}" if root else path

    def read_back(self, tenant: str, entry: dict, documents: dict, objects: dict) -> dict:
        """The tenant's rows other than users (counted), documents and objects (as read), and its entry."""
        import psycopg

        docs, store, prefix = self._stores(entry)
        with psycopg.connect(self.pg.dsn(dbname=self.database("pool-1")), autocommit=True) as c:
            rows = {t: c.execute(f"SELECT count(*) FROM {t} WHERE tenant_id = %s", (tenant,)).fetchone()[0]
                    for t in ("app.users", "app.itineraries", "app.comments", "app.likes")}
        return {"rows": sum(rows.values()), "others": {t: n for t, n in rows.items() if t != "app.users"},
                "documents": {p: docs.document(self._doc(entry, p)).get().to_dict() for p in documents},
                "objects": {n: store.read(prefix + n) for n in objects}, "entry": entry,
                "seeded": (documents, objects)}

    def reader_dsn(self) -> str:
        return self.pg.dsn(user="tenancy_registry_reader", dbname="tenancy_registry")

    def onboard(self) -> None:
        import yaml

        self.header(f"onboard {TENANT}: a tenant added to a copy of tenants.yaml, deployed")
        text = (ROOT / "tenants.yaml").read_text()
        entry = {"id": TENANT, "name": "Soylent Corporation", "plan": "free", "admin_email": f"ops@{TENANT}.example"}
        self.catalogue.write_text(text.rstrip("\n") + "\n\n" + _indent(yaml.safe_dump([entry], sort_keys=False)))
        self.say(f"{_shown(self.catalogue)}: the shipped catalogue, plus")
        for line in _indent(yaml.safe_dump([entry], sort_keys=False)).rstrip().splitlines():
            self.say(f"  {line}")
        self.tenancy("validate", "--tenants", _shown(self.catalogue), "--env", ENV)
        self.tenancy("up", "--tenant", TENANT, *self.where())
        self.tenancy("db", "apply", "--as", "pool-1", *self.where())
        self.seeded[TENANT] = self.seed_tenant(TENANT, self.deployed().directory[TENANT])
        self.neighbour = next(iter(self.seeded))    # the first active pooled tenant of the catalogue
        self.start_apps(TENANT, self.neighbour)
        time.sleep(0.5)
        self.rows.append((f"onboard {TENANT}", "tenancy up", "-", "-"))

    def start_apps(self, *tenants: str) -> None:
        if str(ROOT / "scripts") not in sys.path:
            sys.path.insert(0, str(ROOT / "scripts"))
        from sample_app import App

        for tenant in tenants:
            self.apps[tenant] = App(self.reader_dsn(), ENV, tenant, interval=0.02)
            self.apps[tenant].start()
        self.say(f"the sample application (scripts/sample_app.py) {'now ' if len(tenants) > 1 else 'again '}writes "
                 f"{' and '.join(t + chr(39) + 's' for t in tenants)} users through the client library, each write to the "
                 "database the registry names")

    def report(self, start: float, end: float) -> str:
        """What the applications measured across [start, end]; the moving tenant's longest gap."""
        gap = ""
        for tenant, app in self.apps.items():
            if app.errors:
                raise DemoFailed(f"the application writing {tenant} failed: {app.errors[0]}")
            longest = app.longest_gap(start, end)
            gone = app.gone_at is not None and app.gone_at <= end
            self.say(f"application ({tenant}): {app.committed(start, end)} writes committed, {app.refusals(start, end)} "
                     f"refused and retried; longest gap between committed writes: {longest:.2f}s"
                     + ("; then the registry no longer knew the tenant: the application stopped" if gone else ""))
            if tenant == TENANT:
                gap = f"{longest:.2f}s"
        return gap

    def check(self, app=None, what: str = "users the application wrote") -> None:
        """Every write `app` (the walked tenant's application) committed is in the database the registry names for the
        tenant, with its last value."""
        import psycopg

        from tenancy.operations.registry import Registry
        from tenancy.operations.stores import Resolver

        app = app or self.apps[TENANT]
        writing = self.apps.get(TENANT)
        registry = Registry(self.env["TENANCY_REGISTRY"], ENV)
        with writing.held() if writing is not None and writing.is_alive() else _nothing():
            row = registry.tenant(TENANT)
            store = next(s for s, tables in row.stores["postgres"].items() if "app.users" in tables)
            name = row.stores["databases"][store]
            with psycopg.connect(Resolver(registry).dsn(name, store), autocommit=True) as c:
                found = {str(k): v for k, v in c.execute("SELECT id, display_name FROM app.users WHERE tenant_id = %s",
                                                         (TENANT,)).fetchall()}
        lost = [k for k, v in app.names.items() if found.get(k) != v]
        if lost:
            raise DemoFailed(f"{len(lost)} of the {what} are not in {name} as last written")
        self.say(f"check: all {len(app.names)} {what} are in {name} (where the registry points), each with its last "
                 "value")

    def move(self, plan: str) -> None:
        up = plan != "free"
        start = self.header(f"{'upgrade' if up else 'downgrade'} {TENANT} to {plan}, its data with it, while it writes")
        extra = [] if up else ["--export-to", _shown(self.archives / f"{TENANT}-downgrade"), "--discard", "graph"]
        if not up:
            self.say("standard's stores the free plan cannot hold are archived first; the graph (Neo4j) is let go: this "
                     "machine has no cluster to run its dump Job")
        out = self.tenancy("upgrade", TENANT, "--to", plan, *extra, *self.where())
        end = time.monotonic()
        freeze = re.search(r"write freeze ([0-9.]+)s", out)
        gap = self.report(start, end)
        self.check()
        self.follow(plan=plan)
        self.rows.append((f"{'upgrade' if up else 'downgrade'} to {plan}", "tenancy upgrade", gap,
                          f"{freeze.group(1)}s" if freeze else "-"))

    def follow(self, **fields: str | None) -> None:
        """Change the walked tenant's entry in the demo's tenants.yaml as the command just run says to (a field given
        None is removed): the catalogue says what is deployed."""
        import yaml

        text = self.catalogue.read_text()
        head, _ = text.split(f"  - id: {TENANT}\n", 1)      # its entry is the file's last
        entry = next(t for t in yaml.safe_load(text)["tenants"] if t["id"] == TENANT)
        for k, v in fields.items():
            if v is None:
                entry.pop(k, None)
            else:
                entry[k] = v
        self.catalogue.write_text(head + _indent(yaml.safe_dump([entry], sort_keys=False)))
        said = ", ".join(f"{k}: {v}" if v is not None else f"no {k}" for k, v in fields.items())
        self.say(f"{_shown(self.catalogue)}: {TENANT}'s entry now says {said}, as the command asks")

    def suspend_and_resume(self) -> None:
        start = self.header(f"suspend {TENANT}: its data kept, its writes refused")
        self.tenancy("suspend", TENANT, *self.where())
        time.sleep(1.0)
        end = time.monotonic()
        self.report(start, end)
        self.follow(state="suspended")
        self.rows.append((f"suspend {TENANT}", "tenancy suspend", "(refused from here)", "-"))
        resumed = self.header(f"resume {TENANT}")
        self.tenancy("resume", TENANT, *self.where())
        app, deadline = self.apps[TENANT], time.monotonic() + 10
        while app.committed(resumed, time.monotonic()) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        end = time.monotonic()
        self.report(resumed, end)
        across = app.longest_gap(start, end)
        self.say(f"the application could not write {TENANT} for {across:.2f}s, from the suspend until the resume")
        self.check()
        self.follow(state=None)
        self.rows.append((f"resume {TENANT}", "tenancy resume", f"{across:.2f}s (suspended)", "-"))

    def offboard(self) -> None:
        start = self.header(f"offboard {TENANT}: every store archived and read back, then deleted")
        self.tenancy("offboard", TENANT, "--export-to", _shown(self.archives / TENANT), *self.where())
        app = self.apps[TENANT]
        app.join(10)
        self.report(start, time.monotonic())
        if app.gone_at is None:
            raise DemoFailed(f"the application still writes {TENANT} after its offboarding")
        self.follow(state="offboarded")
        self.rows.append((f"offboard {TENANT}", "tenancy offboard", "(gone)", "-"))

    def restore(self) -> None:
        # RESTORE: `tenancy restore TENANT --from ARCHIVE` brings an offboarded tenant back from its archive. The step
        # runs where the command exists (`tenancy restore --help` exits 0), and otherwise says it is skipped and why.
        self.header(f"restore {TENANT} from its archive")
        probe = subprocess.run([str(TENANCY), "restore", "--help"], cwd=ROOT, env=self.env, capture_output=True, text=True)
        if probe.returncode != 0:
            self.say(f"skipped: `{RESTORE_HELP}` exited {probe.returncode}: this version has no `tenancy restore`, "
                     f"which brings an offboarded tenant back from its archive (`tenancy restore {TENANT} --from "
                     f"{_shown(self.archives / TENANT)}`)")
            self.rows.append((f"restore {TENANT}", "tenancy restore", "skipped", "-"))
            return
        start = time.monotonic()
        offboarded = self.apps.pop(TENANT)
        self.tenancy("restore", TENANT, "--from", _shown(self.archives / TENANT), *self.where())
        self.follow(state=None)
        restored = time.monotonic()
        self.report(start, restored)
        self.start_apps(TENANT)
        app = self.apps[TENANT]
        deadline = time.monotonic() + 10
        while not app.commits and app.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not app.commits:
            raise DemoFailed(f"the application cannot write {TENANT} after its restore: {app.errors or 'refused'}")
        self.say(f"application ({TENANT}): its first write after the restore committed "
                 f"{app.commits[0] - restored:.2f}s after the command ended")
        self.check(offboarded, what="users the application wrote before the offboarding")
        self.rows.append((f"restore {TENANT}", "tenancy restore", "-", "-"))

    def finish(self, started: float) -> None:
        self.header("the neighbours, and what the application saw")
        neighbour = self.apps[self.neighbour]
        end = time.monotonic()
        longest = neighbour.longest_gap(neighbour.commits[0], end) if neighbour.commits else float("nan")
        for app in self.apps.values():
            app.halt()
        if neighbour.errors:
            raise DemoFailed(f"the application writing {self.neighbour} failed: {neighbour.errors[0]}")
        self.say(f"{self.neighbour} (pooled, beside {TENANT} throughout): {len(neighbour.commits)} writes, longest gap "
                 f"{longest:.2f}s")
        self.neighbours()
        width = max(len(r[0]) for r in self.rows)
        self.say("")
        self.say(f"{'step':<{width}}  {'command':<17} {'longest gap (application)':<27} write freeze (operation)")
        for step, command, gap, freeze in self.rows:
            self.say(f"{step:<{width}}  {command:<17} {gap:<27} {freeze}")
        self.done()
        self.say("")
        self.say(f"demo done in {time.monotonic() - started:.0f}s. The servers keep running: `source "
                 f"{_shown(self.dir / 'env')}`, then e.g. `.venv/bin/tenancy registry show --env {ENV}`; "
                 "`make demo-down` stops them and removes " + _shown(self.dir))

    def neighbours(self) -> None:
        """The seeded tenants other than the one walked through hold exactly what was seeded: rows, documents and
        objects (the neighbour written to throughout: its seeded rows, plus the users its application wrote)."""
        others = [t for t in self.seeded if t != TENANT]
        for tenant in others:
            before = self.seeded[tenant]
            now = self.read_back(tenant, before["entry"], *before["seeded"])
            for what in ("others", "documents", "objects") + (("rows",) if tenant != self.neighbour else ()):
                if now[what] != before[what]:
                    raise DemoFailed(f"{tenant}'s {what} changed: {before[what]} then {now[what]}")
        self.say(f"neighbours untouched: {', '.join(sorted(others))} hold the rows, documents and objects seeded for "
                 f"them (and {self.neighbour} the users its application wrote)")


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def up(directory: Path) -> int:
    if directory.exists():
        if running(directory):
            print(f"a demo is still running in {_shown(directory)}: stopping it first")
        down(directory)
    directory.mkdir(parents=True)
    demo = Demo(directory.resolve())
    from tenancy.localservers import PostgresUnavailable, ServerUnavailable

    try:
        demo.run()
    except (DemoFailed, PostgresUnavailable, ServerUnavailable) as exc:
        print(f"\ndemo failed: {exc}\nits servers keep running for a look (`source {_shown(directory / 'env')}`); "
              "`make demo-down` stops them", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; `make demo-down` stops the servers it started", file=sys.stderr)
        return 130
    finally:
        for app in demo.apps.values():
            app.halt()
    return 0


def _quiet_google_python_warning() -> None:
    """The warning google.api_core prints when a client first opens (new releases will drop Python 3.11): nothing
    to act on here; the command line silences the same one."""
    import warnings

    warnings.filterwarnings("ignore", message=r"You are using a (non-supported )?Python version", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", default=str(ROOT / ".demo"), help="where the demo keeps everything (default: .demo)")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    _quiet_google_python_warning()
    return up(directory) if args.action == "up" else down(directory)


if __name__ == "__main__":
    sys.exit(main())
