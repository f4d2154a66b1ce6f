"""Which stacks a change touches, and why: catalogue entries and code compared with a git ref."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tenancy import naming
from tenancy.catalog import Catalog, CatalogError, Model, Tenant, parse_catalog
from tenancy.errors import TenancyError

# Code each kind of stack runs: a change there touches every stack of that kind.
PLATFORM_CODE = ("components/", "stacks/platform.py", "stacks/cells.py", "stacks/contract.py", "stacks/__init__.py",
                 "sql/", "Pulumi.yaml", "tenancy/catalog/", "tenancy/naming.py", "tenancy/envconfig.py",
                 "tenancy/topology.py", "tenancy/record_format.py", "tenancy/fleet/", "tenancy/operator/settings.py",
                 "tenancy/operator/deployers.py", "tenancy/stores/layout.py", "stores.yaml")
TENANT_CODE = ("components/", "stacks/tenant.py", "stacks/platform.py", "stacks/contract.py", "stacks/__init__.py",
               "Pulumi.yaml", "tenancy/catalog/", "tenancy/naming.py", "tenancy/topology.py",
               "tenancy/operator/deployers.py")


class GitError(TenancyError):
    exit_code = 2


@dataclass
class Changes:
    reasons: dict[str, list[str]] = field(default_factory=dict)   # stack -> why it is planned
    removed: dict[str, str] = field(default_factory=dict)         # stack -> why it would be destroyed
    tenants: set[str] = field(default_factory=set)                # tenants whose catalogue entry changed

    def add(self, stack: str, why: str, tenant: str | None = None, identity: bool = False) -> None:
        """`tenant`: a reason about one tenant's share of the platform (`identity`: its identity tenant too)."""
        self.reasons.setdefault(stack, [])
        if why not in self.reasons[stack]:
            self.reasons[stack].append(why)


class _Homes:
    """Which unit stacks hold a tenant's share of the platform (its pool shard or cell with its
    directory entry; a dedicated tenant's own stack), before and after the change, and its identity shard."""

    def __init__(self, env: str, before: dict[str, Any], after: dict[str, Any], units: list[str]):
        self.env, self.before, self.after, self.units = env, before, after, units

    @classmethod
    def of(cls, old: Catalog | None, catalog: Catalog, env: str) -> "_Homes | None":
        from tenancy.fleet import capacity as fleet_capacity
        from tenancy.fleet.placement import place

        try:
            capacity = fleet_capacity.load(env)
        except TenancyError:
            return None
        after = place(catalog, capacity).tenants
        before = {}
        if old is not None:
            import dataclasses
            before = place(dataclasses.replace(old, placements=catalog.placements), capacity).tenants
        from tenancy.topology import unit_stacks
        return cls(env, {t: (p, old.tenant(t).model) for t, p in before.items()} if old else {},
                   {t: (p, catalog.tenant(t).model) for t, p in after.items()}, unit_stacks(env, capacity))

    def stacks(self, tenant: str, identity: bool) -> list[str]:
        out = []
        for home in (self.before.get(tenant), self.after.get(tenant)):
            if home is None:
                continue
            placed, model = home
            if model is Model.POOLED:
                out.append(naming.unit_stack(self.env, placed.pool_shard))
            elif placed.cell:       # a namespace tenant's cell, a dedicated tenant's home cell (its entry, its record)
                out.append(naming.unit_stack(self.env, placed.cell))
            else:
                out.append(naming.stack_name(self.env, tenant))
            if identity:
                out.append(naming.unit_stack(self.env, placed.identity_shard))
        if identity and tenant not in self.after:
            out.append(naming.stack_name(self.env))     # the global stack records the tenants that left
        return out


class _CellsChanges(Changes):
    """A tenant's platform-side change lands on its unit stacks, not on the global
    stack; code and config changes land on every platform-side stack."""

    def __init__(self, homes: _Homes):
        super().__init__()
        self.homes = homes

    def add(self, stack: str, why: str, tenant: str | None = None, identity: bool = False) -> None:
        if stack != naming.stack_name(self.homes.env):
            return super().add(stack, why)
        if tenant is None:
            for s in (stack, *self.homes.units):
                super().add(s, why)
            return
        for s in self.homes.stacks(tenant, identity):
            super().add(s, why)


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def _tenant_view(t: Tenant) -> dict[str, Any]:
    d = asdict(t)
    for derived in ("limit_overrides", "explicit_features"):  # what `limits` and `features` resolve from
        d.pop(derived, None)
    d.pop("placement", None)  # pins decide the platform stack's placement of a new tenant (_platform_view)
    d["plan"] = t.plan.model_dump(mode="json")
    d["limits"] = t.limits.model_dump(mode="json")
    d["dedicated"] = t.dedicated.model_dump(mode="json") if t.dedicated else None
    d["features"] = sorted(f.value for f in t.features)
    d["state"] = t.state.value
    return d


def _platform_view(t: Tenant) -> dict[str, Any]:
    """What the platform stack reads of a tenant: directory entry, identity tenant; pooled tenants' limits."""
    view = {"name": t.name, "plan": t.plan_name, "model": t.model.value, "state": t.state.value,
            "subdomain": t.subdomain, "custom_domain": t.custom_domain,
            "project": t.dedicated.project.id if t.dedicated and t.dedicated.project else None,
            "placement": t.placement.pins() if t.placement else None}
    if t.model is Model.POOLED:
        view["limits"] = t.limits.model_dump(mode="json")
        view["features"] = sorted(f.value for f in t.features)
    return view


def _diff_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def catalog_at(path: str | Path, ref: str) -> tuple[Catalog | None, bool]:
    """(the catalogue file as it was at git `ref` or None, whether it existed there but was invalid)."""
    p = Path(path).resolve()
    root = Path(git(p.parent, "rev-parse", "--show-toplevel").strip())
    git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    rel = p.relative_to(root).as_posix()
    try:
        return parse_catalog(git(root, "show", f"{ref}:{rel}"), f"{rel}@{ref}"), False
    except GitError:
        return None, False
    except CatalogError:
        return None, True


def changes_since(catalog: Catalog, env: str, ref: str) -> Changes:
    """Changes of the catalogue file (and the code beside it) since git `ref`."""
    old, invalid_base = catalog_at(catalog.path, ref)
    root = Path(git(Path(catalog.path).resolve().parent, "rev-parse", "--show-toplevel").strip())
    changed_files = [f for f in git(root, "diff", "--name-only", ref, "--").splitlines() if f]
    changed_files += [f for f in git(root, "ls-files", "--others", "--exclude-standard").splitlines() if f]
    ch = changes_between(old, catalog, env, changed_files, base_label=ref)
    if invalid_base:
        ch.add(naming.stack_name(env), f"the catalogue at {ref} was invalid")
    return ch


def changes_between(old: Catalog | None, catalog: Catalog, env: str, changed_files: list[str] | None = None,
                    base_label: str = "the base") -> Changes:
    """Which stacks differ between two catalogues (None: no base catalogue), and which code changed."""
    ch = Changes()
    platform = naming.stack_name(env)
    changed_files = changed_files or []
    homes = _Homes.of(old, catalog, env)
    if homes is not None:
        ch = _CellsChanges(homes)
    platform_files = [f for f in changed_files if f.startswith(PLATFORM_CODE) or f == f"stacks/Pulumi.{env}.yaml"]
    tenant_files = [f for f in changed_files if f.startswith(TENANT_CODE)]
    if platform_files:
        ch.add(platform, f"code changed: {', '.join(sorted(platform_files)[:3])}{' …' if len(platform_files) > 3 else ''}")
    new_by_id = {t.id: t for t in catalog.tenants}
    old_by_id = {t.id: t for t in old.tenants} if old else {}

    for tid, t in new_by_id.items():
        stack = naming.stack_name(env, tid)
        before = old_by_id.get(tid)
        if old is None:
            if t.has_stack:
                ch.add(stack, f"no catalogue at {base_label}")
            ch.add(platform, f"no catalogue at {base_label}")
            continue
        if before is None:
            ch.tenants.add(tid)
            ch.add(platform, f"tenant added: {tid}", tenant=tid, identity=True)
            if t.has_stack:
                ch.add(stack, "tenant added")
            continue
        pdiff = _diff_fields(_platform_view(before), _platform_view(t))
        if pdiff or _diff_fields(_tenant_view(before), _tenant_view(t)):
            ch.tenants.add(tid)
        if pdiff:
            ch.add(platform, f"tenant {tid} changed: {', '.join(pdiff)}", tenant=tid,
                   identity=before.in_directory != t.in_directory)
        if t.has_stack:
            if not before.has_stack:
                ch.add(stack, f"new tenant stack: {before.plan_name} ({before.model.value}) → {t.plan_name} ({t.model.value})"
                       if before.plan_name != t.plan_name else f"state {before.state.value} → {t.state.value}")
                continue
            tdiff = _diff_fields(_tenant_view(before), _tenant_view(t))
            if "plan_name" in tdiff:
                ch.add(stack, f"plan changed: {before.plan_name} → {t.plan_name}")
            elif "plan" in tdiff:
                ch.add(stack, f"plan '{t.plan_name}' definition changed")
            derived = ("plan", "plan_name") + (("features", "limits") if "plan_name" in tdiff else ())
            rest = [f for f in tdiff if f not in derived]
            if rest:
                ch.add(stack, f"changed: {', '.join(rest)}")
            if tenant_files:
                ch.add(stack, f"code changed: {', '.join(sorted(tenant_files)[:3])}{' …' if len(tenant_files) > 3 else ''}")
            if homes is not None and t.model is Model.NAMESPACE:
                # its stack reads its cell's outputs: a tenant placed in another cell (a pin of one not yet deployed)
                was, now = homes.before.get(tid), homes.after.get(tid)
                if was and now and was[0].cell != now[0].cell:
                    ch.add(stack, f"cell changed: {was[0].cell} → {now[0].cell}")
        elif before.has_stack:
            why = "offboarded" if t.in_directory is False else f"moved to plan {t.plan_name} ({t.model.value})"
            ch.removed[naming.stack_name(env, tid)] = f"tenant {why}: the stack would be destroyed (export data first)"
    for tid, before in old_by_id.items():
        if tid not in new_by_id:
            ch.tenants.add(tid)
            ch.add(platform, f"tenant removed: {tid}", tenant=tid, identity=True)
            if before.has_stack:
                ch.removed[naming.stack_name(env, tid)] = "tenant removed from the catalogue: the stack would be destroyed"
    return ch
