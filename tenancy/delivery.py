"""Tier moves in the delivery workflow: the reviewed decisions file (`moves.yaml`) and the steps a deploy runs.

A downgrade lets go of what the pooled plan cannot hold (a database whose tables the pool has no place for, the
graph) and archives the tenant's stores first. At a terminal an operator types those decisions (`--export-to`,
`--discard`); a deploy job has nobody to type them, so they are made in `moves.yaml`, beside `tenants.yaml`, and
reviewed in the same pull request as the plan change:

    version: 1
    export_to: gs://acme-tenancy-archive-{env}/tier-moves     # default archive of every move ({env}: the environment)
    moves:
      - {from: standard, to: free, discard: [postgres-2, postgres-3, graph]}
      - {tenant: stark, to: free, discard: [postgres-2, postgres-3, graph], keep_source: 30, dump_graph: false}

An entry applies to one plan transition (`from`, `to`) or to one tenant moving to a plan (`tenant`, `to`); the
tenant's entry wins, whole (no merging: the entry a reviewer reads is the one that runs). A downgrade always
needs an archive (`export_to`, here or at the top) and a `discard` naming every store the target plan cannot
hold; without them the move is refused before anything changes, with the entry to add.

`steps` turns the deployment's pending tier moves and the registry's unfinished operations into the commands
the job runs, never two for one tenant: an unfinished operation is resumed with its recorded command (a tier
move the catalogue still asks for is that resume), a new move waits for the tenant's unfinished operation to end.
Each step names the Cloud SQL instances it reaches (for the Auth Proxy) and, when the graph is dumped, the
cluster whose credentials the dump Job needs. The job adds nothing: no `--yes`, `--take-over`, `--abort`,
`--allow-destroy` or DSN. An operation recorded with something the job does not have (a local directory, a DSN,
a confirmation) is left to whoever started it, with its command.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tenancy import topology
from tenancy.catalog import Catalog, LineLoader, Model, Tenant, line_for, line_index
from tenancy.errors import CatalogError, Problem
from tenancy.lifecycle import record as rec
from tenancy.lifecycle.destroy import STORES
from tenancy.stores.layout import TenantStores, stores_for

DEFAULT_KEEP_SOURCE_DAYS = 7
# Where the job writes each cluster's credentials for the graph's dump Job (relative: the job's work tree).
KUBECONFIG_DIR = ".tenancy/kube"
# A Cloud Storage bucket name (3-63 characters; dots allowed, as in domain-named buckets) and an object prefix.
_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9._-]{1,61}[a-z0-9])")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._=-]+")
# What the job never passes, and never resumes an operation with: each is a decision for a person at a terminal
# (a confirmation, an override of the lease or the destroy guard) or a local fact (a DSN, a directory, a state).
NOT_IN_CI = ("--yes", "--no-export", "--take-over", "--abort", "--allow-destroy", "--registry", "--source-dsn",
             "--target-dsn", "--db", "--pooled-dsn", "--replication-dsn", "--objects-root", "--skip", "--state",
             "--engine", "--policy-pack", "--commit", "--kube-context", "--operator-preview", "--timeout")
# The operations the job resumes, and the options each may carry (with a value, or a flag).
_RESUMABLE: dict[str, dict[str, bool]] = {
    "upgrade": {"--to": True, "--env": True, "--tenants": True, "--keep-source": True, "--method": True,
                "--discard": True, "--export-to": True, "--kubeconfig": True},
    "offboard": {"--env": True, "--tenants": True, "--discard": True, "--export-to": True, "--kubeconfig": True},
    "place": {"--env": True, "--tenants": True, "--pool-shard": True, "--method": True, "--kubeconfig": True},
    "suspend": {"--env": True, "--tenants": True},
    "resume": {"--env": True, "--tenants": True},
}


# ------------------------------------------------------------------------------------------------ moves.yaml

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_archive(value: str) -> str:
    """A `gs://bucket/prefix` archive destination ({env} may stand for the environment). A runner's disk does not
    outlive the job, so nothing else is accepted."""
    if not isinstance(value, str) or not value.startswith("gs://"):
        raise ValueError(f"{str(value)[:80]!r} is not a gs:// destination; a CI runner's disk does not outlive the job: "
                         "give the archive bucket, e.g. gs://acme-tenancy-archive/tier-moves")
    if "{" in value.replace("{env}", "") or "}" in value.replace("{env}", ""):
        raise ValueError(f"{value[:80]!r}: {{env}} is the only placeholder")
    # {env} stands for an environment name (lowercase letters, digits, '-'): checked as one.
    bucket, _, prefix = value[len("gs://"):].replace("{env}", "env").partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{value[:80]!r}: '{bucket[:63]}' is not a bucket name (3-63 lowercase letters, digits, '-', "
                         "'_' or '.')")
    parts = prefix.rstrip("/").split("/") if prefix.strip("/") else []
    if any(not _PREFIX_PART.fullmatch(p) or p in (".", "..") for p in parts):
        raise ValueError(f"{value[:80]!r}: the prefix may hold letters, digits, '.', '_', '-', '=' and {{env}} between "
                         "single slashes")
    return value.rstrip("/")


class MoveEntry(_Strict):
    """The decisions for one plan transition (`from`, `to`) or one tenant's move (`tenant`, `to`)."""

    tenant: str | None = None
    from_plan: str | None = Field(None, alias="from")
    to: str
    export_to: str | None = None
    discard: tuple[str, ...] = ()
    keep_source: int = Field(DEFAULT_KEEP_SOURCE_DAYS, ge=0, le=365)
    method: Literal["auto", "online", "copy"] = "auto"
    dump_graph: bool = True

    @field_validator("export_to")
    @classmethod
    def _archive(cls, v: str | None) -> str | None:
        return None if v is None else check_archive(v)

    @field_validator("discard")
    @classmethod
    def _stores(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if s not in STORES]
        if bad:
            raise ValueError(f"{', '.join(map(str, bad))}: not a store; use {', '.join(STORES)}")
        if len(set(v)) != len(v):
            raise ValueError("names a store twice")
        return v

    @model_validator(mode="after")
    def _one_subject(self) -> "MoveEntry":
        if (self.tenant is None) == (self.from_plan is None):
            raise ValueError("give either `tenant` (one tenant's move) or `from` (every move from that plan), with `to`")
        return self


class MovesFile(_Strict):
    version: Literal[1]
    export_to: str | None = None
    moves: tuple[MoveEntry, ...] = ()

    @field_validator("export_to")
    @classmethod
    def _archive(cls, v: str | None) -> str | None:
        return None if v is None else check_archive(v)


@dataclass(frozen=True)
class Decision:
    entry: MoveEntry | None
    where: str               # "moves.yaml:12", or the file alone when no entry applies
    export_to: str | None    # the entry's archive, else the file's default


@dataclass(frozen=True)
class Moves:
    """The loaded file, each entry with its line."""

    path: str
    spec: MovesFile
    lines: tuple[int | None, ...]

    def where(self, i: int) -> str:
        return f"{self.path}:{self.lines[i]}" if self.lines[i] else self.path

    def decision(self, tenant: str, from_plan: str, to_plan: str, downgrade: bool) -> Decision:
        """The entry for this move (the tenant's, else the transition's) and its archive: the entry's, else for a
        downgrade the file's default (an upgrade lets nothing go: it is archived only when its entry says so)."""
        found = [i for i, e in enumerate(self.spec.moves) if e.tenant == tenant and e.to == to_plan] or \
                [i for i, e in enumerate(self.spec.moves) if e.from_plan == from_plan and e.to == to_plan]
        default = self.spec.export_to if downgrade else None
        if not found:
            return Decision(None, self.path, default)
        e = self.spec.moves[found[0]]
        return Decision(e, self.where(found[0]), e.export_to or default)

    def check(self, catalog: Catalog, known_plans: dict | None = None) -> None:
        """Every entry names tenants and plans of the catalogue, crosses the pool's boundary, and is the only
        entry of its kind; an upgrade lets nothing go. Raises CatalogError (one problem per line)."""
        plans = {**(known_plans or {}), **catalog.plans}
        tenants = {t.id for t in catalog.tenants}
        problems: list[Problem] = []
        seen: dict[tuple, int] = {}

        def bad(i: int, subject: str, fieldname: str, message: str) -> None:
            problems.append(Problem(self.path, self.lines[i], subject, fieldname, message))

        for i, e in enumerate(self.spec.moves):
            subject = f"moves[{i}]" + (f" tenant '{e.tenant}'" if e.tenant else f" {e.from_plan} → {e.to}")
            key = ("tenant", e.tenant, e.to) if e.tenant else ("from", e.from_plan, e.to)
            if key in seen:
                bad(i, subject, "moves", f"a second entry for the same move (first at line {self.lines[seen[key]]}); "
                                         "keep one")
            seen.setdefault(key, i)
            if e.tenant is not None and e.tenant not in tenants:
                bad(i, subject, "tenant", f"'{e.tenant}' is not in {Path(catalog.path).name}; remove the entry or fix "
                                          "the id")
            for fieldname, plan in (("from", e.from_plan), ("to", e.to)):
                if plan is not None and plan not in plans:
                    bad(i, subject, fieldname, f"'{plan}' is not a plan ({', '.join(sorted(plans))})")
            if e.to not in plans:
                continue
            to_pooled = plans[e.to].model is Model.POOLED
            if e.from_plan in plans and (plans[e.from_plan].model is Model.POOLED) == to_pooled:
                bad(i, subject, "to", f"{e.from_plan} → {e.to} is not a tier move ({plans[e.from_plan].model.value} → "
                                      f"{plans[e.to].model.value}): tier moves go into or out of the pool")
            if not to_pooled and e.discard:
                bad(i, subject, "discard", f"a move to '{e.to}' ({plans[e.to].model.value}) takes every store with it "
                                           "and lets nothing go; remove `discard`")
        if problems:
            raise CatalogError(problems)


def load(path: str | Path) -> Moves:
    """The moves file, typed; CatalogError (exit 2) naming file:line for anything wrong."""
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise CatalogError([Problem(name, None, None, "(file)", "not found; create it beside tenants.yaml (README, CI and "
                                                                "delivery) with `version: 1`")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError([Problem(name, None, None, "(file)", f"cannot be read: {exc}")]) from None
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CatalogError([Problem(name, mark.line + 1 if mark else None, None, "(syntax)",
                                    f"YAML: {what}; fix the YAML at this line")]) from None
    finally:
        loader.dispose()
    lines = line_index(node)
    if not isinstance(raw, dict):
        raise CatalogError([Problem(name, 1, None, "(file)", "expected a mapping with `version: 1` and `moves:`")])
    try:
        spec = MovesFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = tuple(x if not (isinstance(x, str) and x == "from_plan") else "from" for x in e["loc"])
            # pydantic reports a model-level error at the entry, a field's at the field.
            fieldname = ".".join(str(x) for x in loc) or "(file)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = (f"unknown key; an entry has {', '.join(_ENTRY_KEYS)}" if loc[:1] == ("moves",) else
                       "unknown key; the file has version, export_to and moves")
            problems.append(Problem(name, line_for(lines, loc), None, fieldname, msg))
        raise CatalogError(problems) from None
    moves_lines = tuple(line_for(lines, ("moves", i)) for i in range(len(spec.moves)))
    return Moves(name, spec, moves_lines)


_ENTRY_KEYS = ("tenant", "from", "to", "export_to", "discard", "keep_source", "method", "dump_graph")


# ------------------------------------------------------------------------------------------------- the steps

@dataclass
class Step:
    """One command of the job, or why an item does not run."""

    tenant: str
    kind: str                            # "resume" (an unfinished operation) or "move" (a pending tier move)
    status: str                          # "run" | "failed" (refused before anything changed) | "left" (not the job's)
    message: str = ""
    argv: list[str] = field(default_factory=list)      # the tenancy command's arguments, without the program
    instances: list[str] = field(default_factory=list)  # Cloud SQL connection names the command reaches
    cluster: dict[str, str] | None = None               # the graph's cluster: name, location, project, kubeconfig
    operation: str | None = None
    transition: str | None = None        # "standard → free"
    entry: str | None = None             # the moves.yaml entry that decided it (file:line)

    @property
    def command(self) -> str:
        return shlex.join(["tenancy", *self.argv]) if self.argv else ""

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "command": self.command}


@dataclass(frozen=True)
class Facts:
    """What the steps need of the environment: the deployed record, the global stack's region, the registry's
    databases ({name: (unit, connection)}) and unfinished operations (None: no registry reached)."""

    env: str
    deployed: rec.Deployed
    region: str
    databases: dict[str, tuple[str, dict]]
    unfinished: list | None
    tenants_path: str = "tenants.yaml"
    review: bool = False      # a pull request's review: no deployment read (clusters are named by the deploy)


def required_discards(src: TenantStores, dst: TenantStores) -> list[str]:
    """The stores of `src` the target cannot hold: a database with a table the pooled plan has no place for,
    and the graph (the pool has none)."""
    if not dst.pooled:
        return []
    held = set(dst.pool_holds)
    need = [name for name, tables in src.postgres.items() if any(t not in held for t in tables)]
    return sorted(need + (["graph"] if src.graph else []))


def archive_path(export_to: str, env: str, tenant: str, from_plan: str, to_plan: str, stamp: str) -> str:
    """One move's own archive (an export needs a new, empty destination): <export_to>/<tenant>/<from>-to-<to>-<stamp>."""
    return f"{export_to.replace('{env}', env)}/{tenant}/{from_plan}-to-{to_plan}-{stamp}"


def steps(catalog: Catalog, moves: Moves, facts: Facts, stamp: str) -> list[Step]:
    """The job's steps, resumes first: at most one per tenant."""
    deployed = facts.deployed
    pending = [p for p in rec.for_deploy(catalog, deployed)[1] if p.kind == "move"] if deployed.catalog else []
    out: list[Step] = []
    busy: dict[str, Any] = {}
    for op in facts.unfinished or []:
        busy[op.tenant] = op
        out.append(_resume(op, facts))
    for p in pending:
        op = busy.get(p.tenant)
        if op is not None and op.kind in ("upgrade", "downgrade") and (op.args or {}).get("to_plan") == p.to_plan:
            continue      # resuming it is this move
        if op is not None:
            out.append(Step(p.tenant, "move", "left", transition=_transition(deployed, p),
                            message=f"tenant '{p.tenant}' has an unfinished {op.kind} ({op.id}); its move to "
                                    f"'{p.to_plan}' runs at a deploy after that operation is done", operation=op.id))
            continue
        out.append(_move(catalog, moves, facts, p.tenant, p.to_plan, stamp))
    return out


def _transition(deployed: rec.Deployed, p) -> str:
    return f"{deployed.catalog.tenant(p.tenant).plan_name} → {p.to_plan}"


def _move(catalog: Catalog, moves: Moves, facts: Facts, tenant: str, to_plan: str, stamp: str) -> Step:
    deployed, env = facts.deployed, facts.env
    before = deployed.catalog.tenant(tenant)
    after_catalog = rec.for_tenant(deployed, catalog, tenant, plan=to_plan, from_catalog=True)
    after = after_catalog.tenant(tenant)
    from_plan = before.plan_name
    step = Step(tenant, "move", "run", transition=f"{from_plan} → {to_plan}")
    downgrade = after.model is Model.POOLED
    d = moves.decision(tenant, from_plan, to_plan, downgrade)
    step.entry = d.where if d.entry else None
    e = d.entry or MoveEntry(tenant=tenant, to=to_plan)
    src = stores_for(before, env, deployed.project, pool_shard=topology.pool_shard_of(env, deployed.catalog, tenant))
    dst = stores_for(after, env, deployed.project, pool_shard=topology.pool_shard_of(env, after_catalog, tenant))
    need = required_discards(src, dst)
    if downgrade:
        missing = [s for s in need if s not in e.discard]
        if d.export_to is None or missing:
            step.status = "failed"
            step.message = _missing_decision(moves, d, tenant, from_plan, to_plan, need, missing)
            return step
    argv = ["upgrade", tenant, "--to", to_plan, "--env", env]
    if facts.tenants_path != "tenants.yaml":
        argv += ["--tenants", facts.tenants_path]
    argv += ["--keep-source", str(e.keep_source), "--method", e.method]
    if d.export_to:
        argv += ["--export-to", archive_path(d.export_to, env, tenant, from_plan, to_plan, stamp)]
    for s in sorted(s for s in e.discard if s in src.names):
        argv += ["--discard", s]
    if d.export_to and src.graph and e.dump_graph:
        step.cluster = _cluster(facts, before)
        if step.cluster is None:
            step.status = "failed"
            step.message = (f"tenant '{tenant}': the deployed directory does not say which cluster holds its graph, "
                            f"so its dump Job cannot run; set `dump_graph: false` in {d.where} to let the graph go "
                            "unarchived, or deploy the platform stack first")
            return step
        argv += ["--kubeconfig", step.cluster["kubeconfig"]]
    step.argv = argv
    step.instances = _instances(facts, tenant)
    step.message = (f"{from_plan} → {to_plan} as decided in {d.where}" if d.entry else
                    f"{from_plan} → {to_plan} (an upgrade: every store moves; no entry in {moves.path}, defaults apply)")
    return step


def _missing_decision(moves: Moves, d: Decision, tenant: str, from_plan: str, to_plan: str, need: list[str],
                      missing: list[str]) -> str:
    archive = d.export_to or "gs://ARCHIVE-BUCKET/tier-moves"
    discard = sorted(set(need) | set(d.entry.discard if d.entry else ()))
    wanted = "an archive (export_to)" if d.export_to is None else ""
    if missing:
        wanted += (" and " if wanted else "") + f"discard: [{', '.join(missing)}]"
    head = (f"tenant '{tenant}': the downgrade {from_plan} → {to_plan} needs {wanted}, which {moves.path} does not "
            "decide; nothing was changed.")
    entry = "{" + (f"from: {from_plan}" if d.entry is None or d.entry.from_plan else f"tenant: {tenant}") + \
        f", to: {to_plan}" + (f", export_to: {archive}" if d.export_to is None else "") + \
        (f", discard: [{', '.join(discard)}]" if discard else "") + "}"
    if d.entry is None:
        return f"{head} Add under `moves:` (a reviewed decision to let these go, archived first): - {entry}"
    return f"{head} Make the entry at {d.where}: - {entry}"


def _cluster(facts: Facts, tenant: Tenant) -> dict[str, str] | None:
    """The cluster that runs the tenant's graph, from its deployed directory entry (dedicated: its own, in its
    region; namespace: its cell's, in the platform's region). In a review, named by the deploy."""
    if facts.review:
        return {"name": "CLUSTER", "location": "", "project": "", "kubeconfig": f"{KUBECONFIG_DIR}/CLUSTER.yaml"}
    placement = (facts.deployed.directory.get(tenant.id) or {}).get("placement") or {}
    name, project = placement.get("cluster"), placement.get("project") or facts.deployed.project
    if not name or not project or not facts.region:
        return None
    location = (tenant.region if tenant.model is Model.DEDICATED else None) or facts.region
    return {"name": name, "location": location, "project": project, "kubeconfig": f"{KUBECONFIG_DIR}/{name}.yaml"}


def _instances(facts: Facts, tenant: str) -> list[str]:
    """The Cloud SQL instances of the tenant's own databases and of the pool shards, as the registry records them
    (a database recorded by host and port needs no proxy)."""
    found = {c["instance"] for name, (unit, c) in facts.databases.items()
             if (unit == f"tenant:{tenant}" or name.startswith("pool-")) and isinstance(c, dict) and c.get("instance")}
    return sorted(found)


def _resume(op, facts: Facts) -> Step:
    step = Step(op.tenant, "resume", "run", operation=op.id)
    try:
        argv = shlex.split(op.command or "")
    except ValueError:
        argv = []
    why = _not_resumable(argv, facts)
    if why:
        step.status = "left"
        step.message = (f"{op.kind} of '{op.tenant}' ({op.id}, {op.status}) is not the deploy job's to resume ({why}); "
                        f"resume it where it started: `{op.command}`"
                        + (f", or abort it: `{op.abort_command}`" if op.abort_command else ""))
        return step
    args = argv[1:]
    step.instances = _instances(facts, op.tenant)
    if "--kubeconfig" in args or any(a.startswith("--kubeconfig=") for a in args):
        deployed = facts.deployed
        tenant = deployed.catalog.tenant(op.tenant) if deployed.knows(op.tenant) else None
        step.cluster = _cluster(facts, tenant) if tenant is not None else None
        if step.cluster is None:
            step.status = "failed"
            step.message = (f"{op.kind} of '{op.tenant}' ({op.id}) dumps the graph, and the deployed directory does not "
                            f"say which cluster holds it; resume it where the cluster is reachable: `{op.command}`")
            return step
        args = _with_option(args, "--kubeconfig", step.cluster["kubeconfig"])
    step.argv = args
    step.transition = (f"{(op.settings or {}).get('from_plan')} → {op.args.get('to_plan')}"
                       if op.kind in ("upgrade", "downgrade") else None)
    step.message = f"resumes {op.kind} {op.id} ({op.status}{', at ' + op.phase if op.phase else ''})"
    return step


def _not_resumable(argv: list[str], facts: Facts) -> str | None:
    """Why the job cannot run this recorded command (None: it can)."""
    if len(argv) < 3 or argv[0] != "tenancy" or argv[1] not in _RESUMABLE:
        return f"recorded as `{shlex.join(argv[:3])}`" if argv else "no recorded command"
    allowed = _RESUMABLE[argv[1]]
    positional = 0
    i = 2
    while i < len(argv):
        a = argv[i]
        opt, eq, value = a.partition("=")
        if not opt.startswith("-"):
            positional += 1      # the tenant; a second word is not the command's
            if positional > 1:
                return f"started with the argument {a[:40]!r}"
            i += 1
            continue
        if opt in NOT_IN_CI or opt not in allowed:
            return f"started with {opt}"
        if allowed[opt] and not eq:
            i += 1
            value = argv[i] if i < len(argv) else ""
        if opt == "--export-to":
            try:
                check_archive(value)
            except ValueError:
                return f"started with --export-to {value[:80]}, not a gs:// archive"
        if opt == "--env" and value != facts.env:
            return f"started with --env {value}"
        if opt == "--tenants" and value != facts.tenants_path:
            return f"started with --tenants {value}"
        i += 1
    return None


def _with_option(args: list[str], option: str, value: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == option:
            skip = True
            continue
        if a.startswith(option + "="):
            continue
        out.append(a)
    return [*out, option, value]


def review_facts(env: str, base: Catalog, tenants_path: str = "tenants.yaml") -> Facts:
    """Facts for a pull request's review, offline: the base branch's catalogue stands for the deployment (no
    registry, no instances, no clusters: the decisions and the commands are what a reviewer reads)."""
    return Facts(env, rec.Deployed(base, {}, ""), "", {}, None, tenants_path, review=True)


def registry_databases(registry) -> dict[str, tuple[str, dict]]:
    """{name: (unit, connection)} of every database the registry records."""
    return {d.name: (d.unit, dict(d.connection or {})) for d in registry.databases()}
