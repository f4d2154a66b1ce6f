"""`tenancy up --engine operator`: the Engine interface on the Pulumi Kubernetes Operator.

A rollout pins one commit. Updating a stack creates its Stack object (or patches it: the new commit, and
whatever else of the object changed, as a JSON merge patch of exactly the differences) and waits until the
operator reports `status.lastUpdate` for that generation: `succeeded` with the commit, or `failed` with
its message. Every call goes through the official `kubernetes` client.

The stateful-delete guard works as with the other engines (tenancy.lifecycle.deploy.checked_up): `preview`
runs first. With `preview="stacks"` it is a real `pulumi preview` on the operator: a twin Stack object with
`preview: true` at the new commit, deleted once it reports; a preview that fails (a protected stateful
resource the update would delete or replace fails it in the Pulumi engine) stops the update. The operator
does not report changes per resource, so with `preview="offline"` (or "both") the change list comes from
the offline engine over a state directory that follows every rollout: the guard then sees each stateful
delete or replace itself and refuses it unless `--allow-destroy`.

Destroys are not done through Stack objects (their `destroyOnFinalize` is off: deleting an object must
never delete tenant data); `tenancy offboard` destroys with `--engine auto`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from tenancy import naming
from tenancy.catalog import Catalog
from tenancy.engine import Engine, EngineError, OpResult, StackMissing
from tenancy.errors import TenancyError
from tenancy.operator import deployers
from tenancy.operator import overlay as ov
from tenancy.operator import schema
from tenancy.operator.settings import OperatorSettings
from tenancy.operator.stacks import GROUP, MAX_NAME, PLURAL, VERSION, FleetStack, object_name, platform_config, stack_object

ROOT = Path(__file__).resolve().parent.parent.parent
FIELD_MANAGER = "tenancy"
PREVIEW_SUFFIX = "--pv"      # no real object name ends so: tenant ids have no '--', cut names end in six hex digits
Status = Callable[[str, str], None]   # (stack, message)


class NotAdopted(TenancyError):
    """A stack's deployed outputs are needed but it has no Stack object yet, and nothing else can read them."""

    exit_code = 2


def preview_name(stack: str) -> str:
    return naming.fit(object_name(stack), MAX_NAME - len(PREVIEW_SUFFIX)) + PREVIEW_SUFFIX


def merge_patch(live: dict[str, Any], desired: dict[str, Any], remove: bool = True) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `live` into `desired`; `remove=False` keeps keys only
    `live` has (metadata other tools own)."""
    out: dict[str, Any] = {}
    for k, v in desired.items():
        if k not in live:
            out[k] = v
        elif live[k] != v:
            if isinstance(v, dict) and isinstance(live[k], dict):
                sub = merge_patch(live[k], v, remove)
                if sub:
                    out[k] = sub
            else:
                out[k] = v
    if remove:
        out.update({k: None for k in live if k not in desired})
    return out


class OperatorEngine:
    """Stacks as `pulumi.com/v1` Stack objects in the operator's namespace. `api_client`: a
    `kubernetes.client.ApiClient` (tests give it a recording transport)."""

    def __init__(self, api_client, settings: OperatorSettings, commit: str, *, preview: str = "stacks",
                 offline: Engine | None = None, outputs_fallback: Callable[[str], dict[str, Any]] | None = None,
                 committed: Callable[[str], Catalog | None] | None = None,
                 poll_seconds: float = 10.0, timeout_seconds: float = 3600.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, on_status: Status | None = None):
        from kubernetes import client

        if preview not in ("stacks", "offline", "both"):
            raise ValueError(f"preview must be stacks, offline or both, not {preview!r}")
        if preview != "stacks" and offline is None:
            raise ValueError("an offline preview needs the offline engine")
        self.settings = settings.require_rollout()
        self.commit = commit
        self.preview_mode = preview
        self.offline = offline
        self.outputs_fallback = outputs_fallback
        self.committed = committed or committed_catalog
        self.poll = poll_seconds
        self.timeout = timeout_seconds
        self.sleep = sleep
        self.clock = clock
        self.on_status = on_status
        self.custom = client.CustomObjectsApi(api_client)
        self._committed: dict[str, Catalog | None] = {}

    # ----------------------------------------------------------------------------------- objects
    def _fleet_stack(self, stack: str, catalog: Catalog) -> FleetStack:
        kind, env, tenant = naming.stack_kind(stack)
        if env != self.settings.environment:
            raise EngineError(f"stack '{stack}' is not of environment '{self.settings.environment}'")
        if kind == naming.ENV_STACK:
            return FleetStack(stack, "platform")
        from tenancy.operator.stacks import fleet_stack
        return fleet_stack(stack, catalog)     # what it waits for depends on its placement

    def _platform_project(self) -> str:
        from tenancy.envconfig import load_stack_config

        return str(load_stack_config(self.settings.environment).get("tenancy:gcpProject") or "")

    def _committed_catalog(self) -> Catalog | None:
        if self.commit not in self._committed:
            self._committed[self.commit] = self.committed(self.commit)
        return self._committed[self.commit]

    def desired(self, stack: str, catalog: Catalog, preview: bool = False) -> dict[str, Any]:
        fs = self._fleet_stack(stack, catalog)
        if fs.tenant is not None:
            try:
                t = catalog.tenant(fs.tenant)
            except TenancyError:
                pass
            else:
                # a namespace tenant runs as its cell's deployer, a dedicated one with a
                # project of its own as its own
                cell = next((a.rpartition(naming.STACK_SEPARATOR)[2] for a in fs.after
                             if naming.stack_kind(a)[0] == naming.CELL_STACK), None)
                fs = FleetStack(fs.stack, fs.kind, fs.tenant, t.model.value, fs.after,
                                deployer=deployers.ksa_name(deployers.tenant_scope(t, cell, self._platform_project())))
        diff = ov.difference(catalog, self._committed_catalog(), fs.tenant)
        env_vars = {"TENANCY_CATALOG_OVERLAY": ov.encode(diff)} if diff else None
        config = platform_config(self.settings.environment) if fs.kind == "platform" else None
        obj = stack_object(fs, self.settings, self.commit, config=config, env_vars=env_vars, preview=preview)
        if preview:
            obj["metadata"]["name"] = preview_name(stack)
            obj["metadata"]["labels"]["tenancy.io/preview"] = "true"
            obj["spec"].pop("prerequisites", None)   # a preview changes nothing; it need not wait
        try:
            schema.validate(obj)
        except schema.InvalidObject as exc:
            raise EngineError(str(exc)) from None
        return obj

    # -------------------------------------------------------------------------------- API calls
    def _api(self, what: str, call: Callable[[], Any], missing_ok: bool = False) -> Any:
        """One API call; its error as one line (the server's message), or None for a 404 when `missing_ok`."""
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            detail = exc.reason or ""
            try:
                detail = json.loads(exc.body or "{}").get("message") or detail
            except (ValueError, AttributeError):
                pass
            raise EngineError(f"Kubernetes API: {what}: {exc.status} {detail}".rstrip()) from None

    def _get(self, name: str) -> dict[str, Any] | None:
        return self._api(f"read Stack {name}", lambda: self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.settings.namespace, PLURAL, name), missing_ok=True)

    def _apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create the object, or patch what differs; returns it as stored."""
        name, ns = obj["metadata"]["name"], self.settings.namespace
        live = self._get(name)
        if live is None:
            return self._api(f"create Stack {name}", lambda: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, obj, field_manager=FIELD_MANAGER))
        patch: dict[str, Any] = {}
        meta = merge_patch({k: live["metadata"].get(k) or {} for k in ("labels", "annotations")},
                           {k: obj["metadata"][k] for k in ("labels", "annotations")}, remove=False)
        if meta:
            patch["metadata"] = meta
        spec = merge_patch(live.get("spec") or {}, obj["spec"])
        if spec:
            patch["spec"] = spec
        if not patch:
            return live
        return self._api(f"patch Stack {name}", lambda: self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, patch, field_manager=FIELD_MANAGER))

    def _delete(self, name: str) -> None:
        self._api(f"delete Stack {name}", lambda: self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.settings.namespace, PLURAL, name))

    def _wait(self, stack: str, obj: dict[str, Any], what: str) -> dict[str, Any]:
        """The status once the operator has finished `obj`'s generation at this commit."""
        name, generation = obj["metadata"]["name"], obj["metadata"].get("generation", 0)
        deadline = self.clock() + self.timeout
        seen = ""
        while True:
            live = self._get(name)
            if live is None:
                raise EngineError(f"{what} of '{stack}': Stack object {name} was deleted while waiting for it")
            status = live.get("status") or {}
            last = status.get("lastUpdate") or {}
            if last.get("generation", -1) >= generation:
                if last.get("state") == "succeeded" and last.get("lastSuccessfulCommit") == self.commit:
                    return status
                if last.get("state") == "failed":
                    message = (last.get("message") or "no message").strip()
                    raise EngineError(f"{what} of '{stack}' failed on the operator (Stack {name}, commit "
                                      f"{self.commit[:12]}): {message[-2000:]}")
            stalled = next((c for c in status.get("conditions") or [] if c.get("type") == "Stalled"
                            and c.get("status") == "True" and c.get("observedGeneration", generation) >= generation), None)
            if stalled:
                raise EngineError(f"{what} of '{stack}' stalled on the operator (Stack {name}): "
                                  f"{stalled.get('reason')}: {stalled.get('message')}")
            ready = next((c for c in status.get("conditions") or [] if c.get("type") in ("Ready", "Reconciling")), None)
            now = f"{ready.get('reason')}: {ready.get('message')}" if ready else "waiting for the operator"
            if now != seen and self.on_status:
                self.on_status(stack, now)
            seen = now
            if self.clock() >= deadline:
                raise EngineError(f"{what} of '{stack}' did not finish within {self.timeout:.0f}s (Stack {name}: {seen}); "
                                  "the operator keeps reconciling it")
            self.sleep(self.poll)

    def prune(self, keep: Iterable[str], dry_run: bool = False) -> list[tuple[str, str]]:
        """Delete the Stack objects of this environment whose stacks are not in `keep` (offboarded tenants', and
        tenants' that moved into the pool): [(object name, stack)]. Deleting one stops the operator reconciling a
        stack that no longer exists; it never destroys anything, and an object that would (`destroyOnFinalize`)
        is refused before any is deleted."""
        from tenancy.operator.stacks import MANAGED_BY, STACK_ANNOTATION

        env, keep = self.settings.environment, set(keep)
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY},tenancy.io/environment={env}"
        listed = self._api(f"list Stacks in {self.settings.namespace}", lambda: self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.settings.namespace, PLURAL, label_selector=selector))
        gone = []
        for obj in sorted((listed or {}).get("items") or [], key=lambda o: o["metadata"]["name"]):
            stack = (obj["metadata"].get("annotations") or {}).get(STACK_ANNOTATION)
            if not stack or stack in keep:
                continue
            if (obj.get("spec") or {}).get("destroyOnFinalize"):
                raise EngineError(f"Stack {obj['metadata']['name']} ({stack}) has destroyOnFinalize set: deleting it would "
                                  "destroy the stack; nothing was deleted (destroy with --engine auto first)")
            gone.append((obj["metadata"]["name"], stack))
        if not dry_run:
            for name, _ in gone:
                self._delete(name)
        return gone

    # ------------------------------------------------------------------------------- the Engine
    def preview(self, stack: str, catalog: Catalog) -> OpResult:
        changes = self.offline.preview(stack, catalog).changes if self.preview_mode != "stacks" else []
        if self.preview_mode != "offline":
            twin = self._apply(self.desired(stack, catalog, preview=True))
            try:
                self._wait(stack, twin, "preview")
            finally:
                self._delete(twin["metadata"]["name"])
        return OpResult(stack, changes)

    def up(self, stack: str, catalog: Catalog) -> OpResult:
        obj = self._apply(self.desired(stack, catalog))
        status = self._wait(stack, obj, "update")
        if self.offline is not None:
            self.offline.up(stack, catalog)   # the offline record follows what was rolled out
        return OpResult(stack, [], dict(status.get("outputs") or {}))

    def preview_destroy(self, stack: str, catalog: Catalog) -> OpResult:
        raise EngineError(f"the operator engine does not destroy stacks ('{stack}'): its Stack objects never destroy "
                          "on deletion; use --engine auto for offboarding and downgrades")

    def destroy(self, stack: str, catalog: Catalog, release: Iterable[str] = ()) -> OpResult:
        return self.preview_destroy(stack, catalog)

    def outputs(self, stack: str) -> dict[str, Any]:
        live = self._get(object_name(stack))
        last = ((live or {}).get("status") or {}).get("lastUpdate") or {}
        if live is not None and last.get("lastSuccessfulCommit"):
            return dict(live["status"].get("outputs") or {})
        if self.outputs_fallback is not None:
            return self.outputs_fallback(stack)
        if live is None:
            raise NotAdopted(f"stack '{stack}' has no Stack object in namespace {self.settings.namespace} yet and the "
                             "Pulumi CLI is not on PATH to read its outputs from the state backend; install the CLI "
                             "and log in to the backend, so the first rollout starts from the deployed record")
        raise StackMissing(f"stack '{stack}' has not been deployed successfully by the operator yet")


def committed_catalog(commit: str) -> Catalog | None:
    """tenants.yaml as the workspaces read it: the program's own file at the rolled-out commit."""
    from tenancy.changes import catalog_at

    return catalog_at(ROOT / "tenants.yaml", commit)[0]


def build(env: str, *, commit: str, kube_context: str | None, preview: str, state: str, timeout: float,
          outputs_fallback: Callable[[str], dict[str, Any]] | None, on_status: Status | None) -> OperatorEngine:
    """The engine of `--engine operator`: settings from the platform stack's config, the commit resolved."""
    from tenancy.engine import OfflineEngine
    from tenancy.operator.stacks import resolve_commit

    settings = OperatorSettings.load(env).require_rollout()
    offline = OfflineEngine(state, env) if preview != "stacks" else None
    return OperatorEngine(connect(kube_context), settings, resolve_commit(commit), preview=preview, offline=offline,
                          outputs_fallback=outputs_fallback, timeout_seconds=timeout, on_status=on_status)


def connect(context: str | None = None):
    """An ApiClient from the in-cluster service account, or the kubeconfig (`context`)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if context is None:
            config.load_incluster_config()
            return client.ApiClient()
    except ConfigException:
        pass
    try:
        config.load_kube_config(context=context)
    except (ConfigException, OSError) as exc:
        from tenancy.errors import ConfigError

        raise ConfigError(f"no Kubernetes credentials for the operator's cluster: {exc}; run `gcloud container clusters "
                          "get-credentials <cluster>` or pass --kube-context") from None
    return client.ApiClient()
