"""Stack operations behind one interface, with two implementations here (and a third, the Pulumi
Kubernetes Operator, in tenancy/operator/engine.py).

- `OfflineEngine` runs stack programs under the recording runtime of `tenancy plan` and keeps each stack's
  last recorded resources in a state directory, so previews report creates, updates, replaces and deletes.
  Tests and dry runs use it.
- `AutomationEngine` drives the Pulumi CLI through the Automation API (local program = this project).
  Each worker has its own PULUMI_HOME so concurrent stack selection cannot race, and the policy pack is
  passed to every preview and update. It stays thin: the orchestration above it is exercised offline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import yaml

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.errors import EngineError

# Resources whose deletion or replacement loses tenant data.
STATEFUL_TYPES = frozenset({
    "gcp:sql/databaseInstance:DatabaseInstance", "gcp:sql/database:Database", "gcp:firestore/database:Database",
    "gcp:storage/bucket:Bucket", "kubernetes:core/v1:PersistentVolumeClaim", "gcp:identityplatform/tenant:Tenant",
})
# Inputs whose change makes a provider replace the resource rather than update it in place.
REPLACE_KEYS = frozenset({"name", "project", "region", "location", "locationId", "databaseVersion", "accountId",
                          "secretId", "projectId", "instance", "bucket", "metadata.name", "metadata.namespace"})
Progress = Callable[[str, str], None]   # (stack, message)
STATE_MOVE_BATCH = 200                  # URNs per `pulumi state move` (each URN is about 150 characters)


class ConcurrentUpdate(EngineError):
    """Another update of the same stack is running."""


class StackMissing(EngineError):
    pass


@dataclass(frozen=True)
class Change:
    op: str          # create | update | replace | delete
    urn: str
    type: str
    diffs: tuple[str, ...] = ()          # the inputs that change (update, replace), as the engine names them
    replace_keys: tuple[str, ...] = ()   # those of them that force the replacement

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    @property
    def stateful(self) -> bool:
        return self.type in STATEFUL_TYPES or (self.type == "kubernetes:helm.sh/v3:Release" and self.urn.endswith("::neo4j"))


@dataclass
class OpResult:
    stack: str
    changes: list[Change] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.op] = out.get(c.op, 0) + 1
        return out

    def destructive(self) -> list[Change]:
        """Stateful resources this operation would delete or replace."""
        return [c for c in self.changes if c.op in ("delete", "replace") and c.stateful]


class Engine(Protocol):
    def preview(self, stack: str, catalog: Catalog) -> OpResult: ...
    def up(self, stack: str, catalog: Catalog) -> OpResult: ...
    def preview_destroy(self, stack: str, catalog: Catalog) -> OpResult: ...
    def destroy(self, stack: str, catalog: Catalog, release: Iterable[str] = ()) -> OpResult:
        """Destroy the stack. Protected resources are released one by one, only those named in `release`
        (URNs); a protected resource not released makes the destroy fail before anything is deleted."""
        ...
    def outputs(self, stack: str) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------------------ offline

class OfflineEngine:
    """Runs the real stack programs offline; state is `<state_dir>/<stack>.json`."""

    def __init__(self, state_dir: str | Path, env: str):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env = naming.check_env(env)
        self.calls: list[tuple[str, str]] = []   # (operation, stack), in order: what tests assert on
        self._last: tuple[str, Any] | None = None

    def _path(self, stack: str) -> Path:
        return self.state_dir / f"{stack}.json"

    def _load(self, stack: str) -> dict[str, Any] | None:
        p = self._path(stack)
        return json.loads(p.read_text()) if p.exists() else None

    def _run(self, stack: str, catalog: Catalog) -> tuple[dict[str, dict], dict, dict, list[str]]:
        """The program's resources and outputs. A program run is a function of its stack, catalogue and the other
        stacks' outputs it reads: a preview followed by the update of the same inputs runs it once."""
        key = self._inputs_key(stack, catalog)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        out = self._run_program(stack, catalog)
        self._last = (key, out)
        return out

    def _inputs_key(self, stack: str, catalog: Catalog) -> str:
        import hashlib

        from tenancy.catalog import to_document

        inputs = json.dumps([to_document(catalog), catalog.notes, catalog.placements, str(catalog.path)], sort_keys=True,
                            default=str)
        h = hashlib.sha256(f"{stack}\0{inputs}".encode())
        env = naming.parse_stack_name(stack)[0]
        for other in self.stacks():
            if other != stack and naming.parse_stack_name(other)[0] == env:
                h.update(f"\0{other}\0".encode() + self._path(other).read_bytes())
        return h.hexdigest()

    def _run_program(self, stack: str, catalog: Catalog) -> tuple[dict[str, dict], dict, dict, list[str]]:
        from tenancy.envconfig import load_stack_config, project_name
        from tenancy.offline import run_stack
        from tenancy.recorder import ORGANIZATION, SECRET

        env, tenant = naming.parse_stack_name(stack)
        platform = naming.stack_name(env)
        if tenant is None:
            result, _ = run_stack(stack, catalog, load_stack_config(env), {})
        else:
            if self._load(platform) is None:
                raise StackMissing(f"platform stack '{platform}' has not been deployed; deploy it first (`tenancy up --env "
                                   f"{env} --stack {platform}` with this engine and state)")
            # Every deployed stack's outputs, as StackReferences read them (the global stack's, the cells',
            # identity shards' and pool shards').
            refs = {}
            for other in self.stacks():
                if other != stack and naming.parse_stack_name(other)[0] == env:
                    state = self._load(other)
                    refs[f"{ORGANIZATION}/{project_name()}/{other}"] = (state["rawOutputs"], state["secretOutputs"])
            result, _ = run_stack(stack, catalog, {}, refs)
        resources = {r.urn: {"type": r.type, "inputs": r.inputs, "protect": r.options.get("protect", False)}
                     for r in result.records if r.custom}
        # Secret outputs are kept as the marker: the state directory never holds a secret value.
        raw = {k: (SECRET if k in result.secret_outputs else v) for k, v in result.raw_outputs.items()}
        return resources, result.outputs, raw, result.secret_outputs

    def _diff(self, old: dict[str, dict], new: dict[str, dict]) -> list[Change]:
        changes = []
        for urn, r in new.items():
            before = old.get(urn)
            if before is None:
                changes.append(Change("create", urn, r["type"]))
            elif before["inputs"] != r["inputs"]:
                keys = _changed_keys(before["inputs"], r["inputs"])
                forcing = tuple(sorted(keys & REPLACE_KEYS))
                changes.append(Change("replace" if forcing else "update", urn, r["type"], tuple(sorted(keys)), forcing))
        for urn, r in old.items():
            if urn not in new:
                changes.append(Change("delete", urn, r["type"]))
        return changes

    def preview(self, stack: str, catalog: Catalog) -> OpResult:
        self.calls.append(("preview", stack))
        old = (self._load(stack) or {}).get("resources", {})
        resources, outputs, _, _ = self._run(stack, catalog)
        return OpResult(stack, self._diff(old, resources), outputs)

    def up(self, stack: str, catalog: Catalog) -> OpResult:
        self.calls.append(("up", stack))
        old = (self._load(stack) or {}).get("resources", {})
        resources, outputs, raw, secret = self._run(stack, catalog)
        changes = self._diff(old, resources)
        tmp = self._path(stack).with_suffix(".tmp")
        tmp.write_text(json.dumps({"resources": resources, "outputs": outputs, "rawOutputs": raw,
                                   "secretOutputs": secret}, indent=1, sort_keys=True))
        tmp.replace(self._path(stack))
        return OpResult(stack, changes, outputs)

    def preview_destroy(self, stack: str, catalog: Catalog) -> OpResult:
        self.calls.append(("preview-destroy", stack))
        state = self._load(stack)
        if state is None:
            return OpResult(stack)
        return OpResult(stack, [Change("delete", urn, r["type"]) for urn, r in sorted(state["resources"].items())])

    def destroy(self, stack: str, catalog: Catalog, release: Iterable[str] = ()) -> OpResult:
        release = set(release)
        self.calls.append(("destroy", stack))
        state = self._load(stack)
        if state is None:
            return OpResult(stack)
        for urn in sorted(release):
            if urn in state["resources"]:
                self.calls.append(("unprotect", urn))
        held = sorted(urn for urn, r in state["resources"].items() if r.get("protect") and urn not in release)
        if held:
            raise EngineError(f"destroy of '{stack}' refused by the engine: {len(held)} protected resource(s) were not "
                              f"released: {', '.join(u.rsplit('::', 1)[-1] for u in held[:5])}; nothing was deleted")
        changes = [Change("delete", urn, r["type"]) for urn, r in state["resources"].items()]
        self._path(stack).unlink()
        return OpResult(stack, changes)

    def outputs(self, stack: str) -> dict[str, Any]:
        state = self._load(stack)
        if state is None:
            raise StackMissing(f"stack '{stack}' has no state in {self.state_dir}")
        return state["outputs"]

    def stacks(self) -> list[str]:
        return sorted(p.stem for p in self.state_dir.glob("*.json"))

    def resources(self, stack: str) -> dict[str, str]:
        """URN -> type of every resource in the stack's state ({} when it has none)."""
        return {urn: r["type"] for urn, r in ((self._load(stack) or {}).get("resources") or {}).items()}

    def state_move(self, source: str, dest: str, urns: Iterable[str]) -> None:
        """`pulumi state move`: the resources leave `source`'s state and join `dest`'s under the same URN but for
        the stack; nothing in the cloud changes. Written destination first (as the CLI does), so an interruption
        leaves a resource in both states, never in neither."""
        urns = list(urns)
        self.calls.append(("state-move", f"{source}->{dest}:{len(urns)}"))
        src = self._load(source)
        if src is None:
            raise StackMissing(f"stack '{source}' has no state in {self.state_dir}")
        dst = self._load(dest) or {"resources": {}, "outputs": {}, "rawOutputs": {}, "secretOutputs": []}
        missing = [u for u in urns if u not in src["resources"]]
        if missing:
            raise EngineError(f"state move {source} -> {dest}: {len(missing)} resource(s) not in {source}: {missing[0]}")
        for urn in urns:
            moved = rename_urn_stack(urn, dest)
            if moved in dst["resources"]:
                raise EngineError(f"state move {source} -> {dest}: {moved} already exists in {dest}")
            dst["resources"][moved] = src["resources"][urn]
        self._save(dest, dst)
        for urn in urns:
            del src["resources"][urn]
        self._save(source, src)

    def _save(self, stack: str, state: dict[str, Any]) -> None:
        tmp = self._path(stack).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        tmp.replace(self._path(stack))


def rename_urn_stack(urn: str, stack: str) -> str:
    """`urn:pulumi:<stack>::<project>::<type>::<name>` with another stack."""
    head, _, rest = urn.partition("::")
    return f"urn:pulumi:{stack}::{rest}"


def _changed_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            key = f"{prefix}.{k}" if prefix else k
            if a.get(k) != b.get(k):
                out.add(key)
                if key.startswith("metadata"):
                    out |= _changed_keys(a.get(k), b.get(k), key)
        return out
    return {prefix} if a != b else set()


# ---------------------------------------------------------------------------------------------- automation

class AutomationEngine:
    """The Pulumi CLI through the Automation API. `command` may be any `PulumiCommand` (tests record calls)."""

    def __init__(self, project_dir: str | Path, policy_pack: str | Path | None, command=None,
                 env_vars: dict[str, str] | None = None, pulumi_home: str | Path | None = None,
                 on_output: Callable[[str, str], None] | None = None):
        self.project_dir = Path(project_dir)
        self.policy_pack = str(policy_pack) if policy_pack else None
        self.command = command
        self.env_vars = dict(env_vars or {})
        self.base_home = Path(pulumi_home or os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
        self.on_output = on_output
        self._homes: dict[int, Path] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="tenancy-auto-"))
        # per-worker PULUMI_HOMEs and catalogue files go when the engine does
        weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self._lock = threading.Lock()

    def _home(self) -> Path:
        """A PULUMI_HOME per worker thread: its own current-stack selection, the shared login and plugins."""
        ident = threading.get_ident()
        with self._lock:
            if ident not in self._homes:
                home = self._tmp / f"home-{len(self._homes)}"
                home.mkdir(parents=True)
                creds = self.base_home / "credentials.json"
                if creds.exists():
                    shutil.copy(creds, home / "credentials.json")
                plugins = self.base_home / "plugins"
                if plugins.exists():
                    (home / "plugins").symlink_to(plugins)
                self._homes[ident] = home
            return self._homes[ident]

    def _catalog_file(self, catalog: Catalog) -> str:
        """The catalogue the program must see (a tier move changes one tenant's plan before the file does)."""
        from tenancy.catalog import to_document
        path = self._tmp / f"catalog-{threading.get_ident()}.yaml"
        path.write_text(yaml.safe_dump(to_document(catalog), sort_keys=False))
        return str(path)

    def _notes_file(self, catalog: Catalog) -> str:
        path = self._tmp / f"notes-{threading.get_ident()}.json"
        path.write_text(json.dumps(dict(catalog.notes), sort_keys=True))
        return str(path)

    def _placements_file(self, catalog: Catalog) -> str:
        """The deployed placements the platform program keeps (tenancy/fleet/placement.py)."""
        path = self._tmp / f"placements-{threading.get_ident()}.json"
        path.write_text(json.dumps({k: dict(v) for k, v in catalog.placements.items()}, sort_keys=True))
        return str(path)

    def _stack(self, name: str, catalog: Catalog, create: bool = True):
        """The stack, created when missing -- except for a preview (`create=False`): a preview changes nothing,
        not even the list of stacks in the state backend, so the credentials it runs with can be read-only."""
        from pulumi import automation as auto

        env = {**self.env_vars, "TENANCY_CATALOG": self._catalog_file(catalog), "TENANCY_NOTES": self._notes_file(catalog),
               "TENANCY_PLACEMENTS": self._placements_file(catalog)}
        ws = auto.LocalWorkspace(work_dir=str(self.project_dir), pulumi_home=str(self._home()), env_vars=env,
                                 pulumi_command=self.command)
        try:
            return auto.Stack.create_or_select(name, ws) if create else auto.Stack.select(name, ws)
        except auto.errors.StackNotFoundError:
            raise StackMissing(f"stack '{name}' does not exist yet: a preview never creates a stack (the offline plan "
                               "shows what it would create)") from None
        except auto.errors.ConcurrentUpdateError as exc:
            raise ConcurrentUpdate(f"stack '{name}' is being updated by someone else: {exc}") from None

    def _events(self, collected: list[Change]):
        def on_event(event) -> None:
            pre = getattr(event, "resource_pre_event", None)
            if pre is None or pre.metadata is None:
                return
            op = str(getattr(pre.metadata.op, "value", pre.metadata.op))
            mapped = {"create": "create", "update": "update", "delete": "delete", "replace": "replace",
                      "create-replacement": "replace", "delete-replaced": "replace"}.get(op)
            if mapped:
                # `diffs`: the properties that change; `keys`: those that force a replacement.
                collected.append(Change(mapped, pre.metadata.urn, pre.metadata.type,
                                        tuple(pre.metadata.diffs or ()),
                                        tuple(pre.metadata.keys or ()) if mapped == "replace" else ()))
        return on_event

    def _out(self, stack: str):
        return (lambda line: self.on_output(stack, line)) if self.on_output else None

    def preview(self, stack: str, catalog: Catalog) -> OpResult:
        from pulumi import automation as auto

        changes: list[Change] = []
        s = self._stack(stack, catalog, create=False)
        try:
            s.preview(policy_packs=[self.policy_pack] if self.policy_pack else None, on_event=self._events(changes),
                      on_output=self._out(stack))
        except auto.errors.ConcurrentUpdateError as exc:
            raise ConcurrentUpdate(f"stack '{stack}' is being updated by someone else: {exc}") from None
        except auto.errors.CommandError as exc:
            raise EngineError(f"preview of '{stack}' failed: {str(exc).strip()[-2000:]}") from None
        return OpResult(stack, _dedupe(changes))

    def up(self, stack: str, catalog: Catalog) -> OpResult:
        from pulumi import automation as auto

        changes: list[Change] = []
        s = self._stack(stack, catalog)
        try:
            res = s.up(policy_packs=[self.policy_pack] if self.policy_pack else None, on_event=self._events(changes),
                       on_output=self._out(stack))
        except auto.errors.ConcurrentUpdateError as exc:
            raise ConcurrentUpdate(f"stack '{stack}' is being updated by someone else: {exc}") from None
        except auto.errors.CommandError as exc:
            raise EngineError(f"update of '{stack}' failed: {str(exc).strip()[-2000:]}") from None
        return OpResult(stack, _dedupe(changes), {k: ("[secret]" if v.secret else v.value) for k, v in res.outputs.items()})

    def preview_destroy(self, stack: str, catalog: Catalog) -> OpResult:
        from pulumi import automation as auto

        changes: list[Change] = []
        s = self._stack(stack, catalog)
        try:
            s.preview_destroy(on_event=self._events(changes), on_output=self._out(stack))
        except auto.errors.CommandError as exc:
            raise EngineError(f"destroy preview of '{stack}' failed: {str(exc).strip()[-2000:]}") from None
        return OpResult(stack, _dedupe(changes))

    def destroy(self, stack: str, catalog: Catalog, release: Iterable[str] = ()) -> OpResult:
        """Releases protection of the named resources only (the workflow verified their data is saved), then
        destroys; any other protected resource makes the CLI refuse the destroy."""
        from pulumi import automation as auto

        s = self._stack(stack, catalog)
        changes: list[Change] = []
        try:
            for urn in sorted(set(release)):
                s._run_pulumi_cmd_sync(["state", "unprotect", urn, "--yes"])
            s.destroy(on_event=self._events(changes), on_output=self._out(stack))
        except auto.errors.CommandError as exc:
            raise EngineError(f"destroy of '{stack}' failed: {str(exc).strip()[-2000:]}") from None
        return OpResult(stack, _dedupe(changes))

    def resources(self, stack: str) -> dict[str, str]:
        """URN -> type of every resource in the stack's state (`pulumi stack export`)."""
        s = self._stack(stack, _EMPTY)
        deployment = s.export_stack().deployment or {}
        return {r["urn"]: r["type"] for r in deployment.get("resources") or [] if "urn" in r}

    def state_move(self, source: str, dest: str, urns: Iterable[str]) -> None:
        """`pulumi state move --source <source> --dest <dest> --yes <urn>...`, run in the destination's workspace
        (the CLI needs the destination stack to exist), in batches that keep the command line short."""
        from pulumi import automation as auto

        s = self._stack(dest, _EMPTY)
        urns = list(urns)
        try:
            for i in range(0, len(urns), STATE_MOVE_BATCH):
                s._run_pulumi_cmd_sync(["state", "move", "--source", source, "--dest", dest, "--yes",
                                        *urns[i:i + STATE_MOVE_BATCH]])
        except auto.errors.CommandError as exc:
            raise EngineError(f"state move {source} -> {dest} failed: {str(exc).strip()[-2000:]}") from None

    def outputs(self, stack: str) -> dict[str, Any]:
        from pulumi import automation as auto

        try:
            s = auto.Stack.select(stack, auto.LocalWorkspace(work_dir=str(self.project_dir), pulumi_home=str(self._home()),
                                                             env_vars=self.env_vars, pulumi_command=self.command))
        except auto.errors.StackNotFoundError:
            raise StackMissing(f"stack '{stack}' does not exist") from None
        return {k: ("[secret]" if v.secret else v.value) for k, v in s.outputs().items()}


_EMPTY = Catalog(path="(state operation)", plans={}, tenants=())   # state commands run no program


def _dedupe(changes: list[Change]) -> list[Change]:
    seen, out = set(), []
    for c in changes:
        if (c.op, c.urn) not in seen:
            seen.add((c.op, c.urn))
            out.append(c)
    return out
