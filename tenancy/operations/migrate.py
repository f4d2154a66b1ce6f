"""`tenancy migrate`: an environment deployed as one platform stack (the layout of earlier versions) moves to the
global stack plus cell, pool-shard and identity-shard stacks (stacks/cells.py) without recreating anything.

Cell 1 and pool shard 1 keep every logical and physical name of that platform stack (stacks/cells.py),
and Identity Platform tenants keep theirs in their identity shards, so each resource's URN in its new stack is
its old URN with the stack renamed. The sequence:

1. **Check.** The platform stack has a deployed record and no `layout` output (the catalogue and placements the
   move starts from: every tenant stays in cell 1 and pool shard 1). Until the move is done every other command
   refuses the environment (tenancy/lifecycle/record.py), so no program removes what still has to move.
2. **Map.** This version's programs run offline (the same recorder as `tenancy plan`) with that record; each
   resource in the platform stack's state goes to the unit stack that declares its URN. Resources that the
   global stack keeps stay; a resource no stack declares stops the migration before anything moves.
3. **Move.** `pulumi state move --source <env> --dest <env>.<unit>` per unit stack, driven through the engine
   (the Automation API has no call for it; the CLI runs in the destination's workspace). State only: nothing
   in the cloud changes. Each move is recomputed from the current states, so a re-run after an interruption
   moves only what is left (the CLI writes the destination first: an interruption leaves a resource in both
   states, and the re-run sees it already in place and drops it from the source).
4. **Verify.** A preview of the global stack, every unit stack and every tenant stack with this version's
   programs must delete and replace nothing; creates (the pool shards' directories) and updates (cell 1's
   directory now lists only its tenants) are reported.

Deploys must not run while this runs (the same rule as for any state operation): run it from the deploy
workflow's concurrency group, or with deploys paused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.engine import EngineError, OpResult, rename_urn_stack
from tenancy.errors import TenancyError
from tenancy.record_format import CELLS, LAYOUT_OUTPUT

PROVIDER_PREFIX = "pulumi:providers:"


class MigrationError(TenancyError):
    exit_code = 2


@dataclass
class MigrationPlan:
    environment: str
    moves: dict[str, list[str]] = field(default_factory=dict)     # unit stack -> URNs in the platform stack
    kept: list[str] = field(default_factory=list)                  # URNs the global stack keeps
    unclaimed: list[str] = field(default_factory=list)             # URNs no stack of this version declares
    already: dict[str, int] = field(default_factory=dict)          # unit stack -> resources already there

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.moves.values())


@dataclass
class MigrationResult:
    plan: MigrationPlan
    previews: list[OpResult]

    def creates_and_updates(self) -> dict[str, dict[str, int]]:
        return {p.stack: p.counts() for p in self.previews if p.changes}


def _deployed_catalog(engine, env: str) -> Catalog:
    from tenancy.fleet import capacity as fleet_capacity
    from tenancy.lifecycle import record

    fleet_capacity.load(env)      # the environment's config, checked before anything is read or moved
    deployed = record.read(engine, env, one_platform_stack=True)
    if deployed.catalog is None:
        raise MigrationError(f"platform stack '{env}' has no deployed record: nothing to migrate (a new environment "
                             "needs no migration)")
    return deployed.catalog


def plan_migration(engine, env: str, catalog: Catalog) -> MigrationPlan:
    """Which resources of the platform stack go to which unit stack (step 2)."""
    from tenancy.plan import plan as offline_plan

    platform = naming.stack_name(env)
    declared = {s.name: {r["urn"] for r in s.resources}
                for s in offline_plan(catalog, env, workers=1).stacks if s.kind != "tenant"}
    out = MigrationPlan(env)
    for urn, type_ in sorted(engine.resources(platform).items()):
        if type_.startswith(PROVIDER_PREFIX) or type_ == "pulumi:pulumi:Stack":
            continue     # providers are copied by the move; the root stack resource stays
        if urn in declared.get(platform, ()):
            out.kept.append(urn)
            continue
        dest = next((s for s, urns in declared.items() if s != platform and rename_urn_stack(urn, s) in urns), None)
        if dest is None:
            out.unclaimed.append(urn)
        else:
            out.moves.setdefault(dest, []).append(urn)
    for stack in declared:
        if stack != platform:
            have = engine.resources(stack) if stack in _known(engine) else {}
            if have:
                out.already[stack] = len(have)
    return out


def _known(engine) -> set[str]:
    lister = getattr(engine, "stacks", None)
    return set(lister()) if lister else set()


def migrate(engine, env: str, say: Callable[[str], None] = lambda m: None, dry_run: bool = False) -> MigrationResult:
    """Steps 1-4 (module docstring). `dry_run`: map and report only. A re-run after success does nothing."""
    if migrated(engine, env):
        say(f"environment '{env}' is already a global stack with unit stacks: nothing to move")
        return MigrationResult(MigrationPlan(env), [])
    catalog = _deployed_catalog(engine, env)
    platform = naming.stack_name(env)
    mp = plan_migration(engine, env, catalog)
    if mp.unclaimed:
        raise MigrationError(
            f"{len(mp.unclaimed)} resource(s) of '{platform}' are declared by no stack of this version, so a "
            f"migration would delete them: {', '.join(u.rsplit('::', 1)[-1] for u in mp.unclaimed[:5])}"
            f"{' …' if len(mp.unclaimed) > 5 else ''}; nothing was moved")
    say(f"{mp.count} resource(s) move out of '{platform}' into {len(mp.moves)} stack(s); {len(mp.kept)} stay in the "
        "global stack")
    if dry_run:
        return MigrationResult(mp, [])
    for dest in sorted(mp.moves, key=_order):
        urns = mp.moves[dest]
        held = set(engine.resources(dest)) if dest in _known(engine) else set()
        todo = [u for u in urns if rename_urn_stack(u, dest) not in held]
        say(f"moving {len(todo)} resource(s) to {dest}")
        if todo:
            try:
                engine.state_move(platform, dest, todo)
            except EngineError as exc:
                raise MigrationError(f"{exc}; re-run `tenancy migrate --env {env}` to continue") from None
    previews = _apply(engine, env, catalog, say)
    return MigrationResult(mp, previews)


def migrated(engine, env: str) -> bool:
    """Whether the environment's own stack is already the global stack, its record split across unit stacks."""
    try:
        return engine.outputs(naming.stack_name(env)).get(LAYOUT_OUTPUT) == CELLS
    except EngineError:
        return False


def _order(stack: str) -> tuple[int, str]:
    kind = naming.stack_kind(stack)[0]
    return ({naming.IDENTITY_STACK: 0, naming.CELL_STACK: 1, naming.POOL_STACK: 2}.get(kind, 3), stack)


def _apply(engine, env: str, catalog: Catalog, say: Callable[[str], None]) -> list[OpResult]:
    """Step 4, in the order stacks read each other: each unit stack previews without a delete or a replace, then
    runs (its outputs are what the next ones read); tenant stacks preview only (their next deploy reads their
    cell); the global stack runs last, dropping the platform stack's old outputs (the deployed record among
    them, so a re-run until then still knows the catalogue)."""
    from tenancy.topology import unit_stacks
    from tenancy.fleet import capacity as fleet_capacity

    capacity = fleet_capacity.load(env)
    units = sorted(unit_stacks(env, capacity), key=_order)
    tenants = [naming.stack_name(env, t.id) for t in catalog.stack_tenants]
    previews = []
    for stack in [*units, *tenants, naming.stack_name(env)]:
        res = engine.preview(stack, catalog)
        previews.append(res)
        # Nothing stateful may be deleted or replaced, and nothing deleted: a provider the move copied and the
        # program no longer declares goes from the state only. Replacing a stateless object (the SQL Job, whose
        # registrations now name the tenants' unit stacks) is reported and allowed.
        losing = [c for c in res.changes if not c.type.startswith(PROVIDER_PREFIX)
                  and ((c.op == "replace" and c.stateful) or c.op == "delete")]
        counts = ", ".join(f"{n} {op}" for op, n in sorted(res.counts().items())) or "no changes"
        say(f"preview {stack}: {counts}")
        if losing:
            raise MigrationError(
                f"after the state moves, the preview of '{stack}' would {losing[0].op} "
                f"{', '.join(c.urn.rsplit('::', 1)[-1] for c in losing[:5])}{' …' if len(losing) > 5 else ''}: stopped "
                f"before running it. Nothing was deleted; the states are moved, so no deploy may run until this is "
                f"resolved")
        if stack not in tenants:
            engine.up(stack, catalog)
    return previews
