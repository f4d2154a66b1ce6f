"""A tenant's Neo4j graph: dumped to (and loaded from) a bucket by Kubernetes Jobs next to the database.

No Neo4j runs on the machine that drives a move; the supported export is `neo4j-admin database dump` / `load`,
run where the database's volume is. Each Job pod has two containers sharing a scratch volume: neo4j-admin
(reads or writes the tenant's data volume) and the Cloud SDK (`gcloud storage cp` to or from the bucket with
the tenant's Workload Identity Kubernetes service account; no key, no token mounted).

Offline, not online: Neo4j Community (the chart's default edition, which the tenant stack deploys) can only
dump a stopped database, and Enterprise's online `neo4j-admin database backup` needs a backup port and a
licence. So the Job carries the annotation `tenancy.io/stop-statefulset`, and `KubernetesJobRunner` scales
that StatefulSet to 0, waits until its pods are gone, runs the Job, and scales it back -- only once the Job's
own pods are gone, so Neo4j never starts on a volume a dump or load still uses. The graph is unavailable for
the Job's duration (writes are frozen during a move anyway). Scaling from the runner keeps the Job itself
unprivileged: an in-pod scaler would need API credentials and RBAC on StatefulSets.

Where the data is comes from the `neo4j` Helm release in stacks/tenant.py (chart neo4j 5.26): StatefulSet
= release name, PVC `data-<release>-0` from the `data` volume claim template, mounted with subPath `data`,
database `neo4j` unless `initial.dbms.default_database` is configured, pods running as the stack's user.
`layout_from_release` derives it from the release's inputs; tests check it against the planned stack.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from tenancy import naming
from tenancy.stores import StoreError, Summary
from tenancy.stores import objects

# Official images, pinned by digest (the tag is informative only).
# neo4j:5.26 (5.26.30 community) image index, as published in docker-library/repo-info.
NEO4J_IMAGE = "neo4j:5.26.30-community@sha256:b3c4f3ded24b3e2bec0753e2c535bb0885b08410fe29b33852861404c8830dac"
# google-cloud-cli 573.0.0-stable; this digest comes from a third-party pin list, not read from the registry.
GCLOUD_IMAGE = ("gcr.io/google.com/cloudsdktool/google-cloud-cli:573.0.0-stable"
                "@sha256:f5fae73a6f1c60b58a1150ff76771a43620891d4dd74abc527c8eca0d544b385")

STOP_ANNOTATION = "tenancy.io/stop-statefulset"
SELECTOR_ANNOTATION = "tenancy.io/stop-selector"
KIND = "graph"
SCRATCH = "/backup"
TTL_SECONDS = 86400
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class GraphError(StoreError):
    pass


@dataclass(frozen=True)
class Neo4jLayout:
    """Where one Neo4j release keeps its data, and as whom its pods run."""

    statefulset: str = "neo4j"
    pvc: str = "data-neo4j-0"
    sub_path: str = "data"
    database: str = "neo4j"
    run_as_user: int = 10001
    run_as_group: int = 10001
    fs_group: int = 10001
    storage_class: str = "premium-rwo"
    scratch: str = "20Gi"           # at least the data volume: a dump is never larger than the store

    @property
    def pod_selector(self) -> str:
        return f"helm.neo4j.com/instance={self.statefulset}"


def layout_from_release(inputs: dict[str, Any]) -> Neo4jLayout:
    """The layout of a `kubernetes:helm.sh/v3:Release` of the neo4j chart, from its inputs (plan.json form)."""
    release = inputs.get("name")
    values = inputs.get("values") or {}
    if not release:
        raise GraphError("the neo4j Helm release has no name; cannot tell its StatefulSet and volume")
    data = (values.get("volumes") or {}).get("data") or {}
    if data.get("mode") not in ("dynamic", "defaultStorageClass", "volumeClaimTemplate", "selector"):
        raise GraphError(f"neo4j data volume mode {data.get('mode')!r} is not a per-pod volume claim; the dump Job "
                         "only knows claim templates (mode 'dynamic')")
    dynamic = data.get("dynamic") or {}
    sc = ((values.get("podSpec") or {}).get("securityContext")) or values.get("securityContext") or {}
    config = values.get("config") or {}
    return Neo4jLayout(
        statefulset=release, pvc=f"data-{release}-0", sub_path=data.get("subPathExpr") or "data",
        database=config.get("initial.dbms.default_database", "neo4j"),
        run_as_user=int(sc.get("runAsUser", 7474)), run_as_group=int(sc.get("runAsGroup", 7474)),
        fs_group=int(sc.get("fsGroup", 7474)), storage_class=dynamic.get("storageClassName") or "premium-rwo",
        scratch=(dynamic.get("requests") or {}).get("storage") or "20Gi")


DEFAULT_LAYOUT = Neo4jLayout()


def _check(tenant_id: str, namespace: str, bucket: str, object_name: str, image: str) -> None:
    if not _DNS_LABEL.match(namespace or ""):
        raise GraphError(f"tenant '{tenant_id}': namespace {namespace!r} is not a Kubernetes namespace name")
    if not _BUCKET.match(bucket or ""):
        raise GraphError(f"tenant '{tenant_id}': {bucket!r} is not a bucket name (give the name, not gs://...)")
    if not object_name or object_name.startswith("/") or object_name.endswith("/") or any(c in object_name for c in "\n\r\0"):
        raise GraphError(f"tenant '{tenant_id}': dump object name {object_name!r} must be a plain object name "
                         "such as graph/acme/neo4j.dump")
    if "@sha256:" not in image:
        raise GraphError(f"image {image!r} is not pinned by digest (name@sha256:...)")


def job_name(kind: str, tenant_id: str, object_name: str) -> str:
    """Deterministic per (tenant, object): a re-run finds the Job it started instead of starting another."""
    digest = hashlib.sha256(f"{tenant_id}\0{object_name}".encode()).hexdigest()[:8]
    return f"{naming.fit(f'graph-{kind}-{tenant_id}', 54)}-{digest}"


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}}


def _neo4j_container(name: str, args: list[str], image: str, layout: Neo4jLayout) -> dict[str, Any]:
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent", "securityContext": _security(),
        # neo4j-admin directly, not the image's entrypoint (which edits the configuration in place).
        "command": ["neo4j-admin", "database", *args],
        "env": [{"name": "HEAP_SIZE", "value": "1g"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1536Mi", "ephemeral-storage": "256Mi"},
                      "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "1Gi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": layout.sub_path},
                         {"name": "scratch", "mountPath": SCRATCH},
                         {"name": "logs", "mountPath": "/logs"}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def _gcloud_container(name: str, source: str, target: str) -> dict[str, Any]:
    return {
        "name": name, "image": GCLOUD_IMAGE, "imagePullPolicy": "IfNotPresent", "securityContext": _security(),
        "command": ["gcloud", "storage", "cp", "--no-user-output-enabled", source, target],
        "env": [{"name": "CLOUDSDK_CONFIG", "value": "/tmp/gcloud"}, {"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "256Mi"}},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def _job(kind: str, tenant_id: str, namespace: str, bucket: str, object_name: str, image: str, ksa: str,
         layout: Neo4jLayout, deadline_seconds: int, first: dict, second: dict) -> dict[str, Any]:
    name = job_name(kind, tenant_id, object_name)
    labels = {"app.kubernetes.io/managed-by": "tenancy", "app.kubernetes.io/component": f"graph-{kind}",
              "tenancy.io/tenant": tenant_id}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {STOP_ANNOTATION: layout.statefulset, SELECTOR_ANNOTATION: layout.pod_selector,
                                     "tenancy.io/object": f"gs://{bucket}/{object_name}"}},
        "spec": {
            "backoffLimit": 1, "activeDeadlineSeconds": deadline_seconds, "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": ksa,
                # Workload Identity goes through the GKE metadata server; no Kubernetes API token is needed.
                "automountServiceAccountToken": False,
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": layout.run_as_user,
                                    "runAsGroup": layout.run_as_group, "fsGroup": layout.fs_group,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "initContainers": [first], "containers": [second],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": layout.pvc}},
                    # A per-pod disk for the dump file: it can be far larger than node ephemeral storage.
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                        "metadata": {"labels": labels},
                        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": layout.storage_class,
                                 "resources": {"requests": {"storage": layout.scratch}}}}}},
                    {"name": "logs", "emptyDir": {"sizeLimit": "256Mi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                ],
            }},
        },
    }


def dump_job(tenant_id: str, namespace: str, bucket: str, object_name: str, image: str = NEO4J_IMAGE, *,
             ksa: str = "app", layout: Neo4jLayout = DEFAULT_LAYOUT, deadline_seconds: int = 3600) -> dict[str, Any]:
    """A Job that dumps the tenant's database (stopped) and uploads it to gs://bucket/object_name."""
    _check(tenant_id, namespace, bucket, object_name, image)
    dump = _neo4j_container("dump", ["dump", layout.database, f"--to-path={SCRATCH}"], image, layout)
    upload = _gcloud_container("upload", f"{SCRATCH}/{layout.database}.dump", f"gs://{bucket}/{object_name}")
    return _job("dump", tenant_id, namespace, bucket, object_name, image, ksa, layout, deadline_seconds, dump, upload)


def load_job(tenant_id: str, namespace: str, bucket: str, object_name: str, image: str = NEO4J_IMAGE, *,
             ksa: str = "app", layout: Neo4jLayout = DEFAULT_LAYOUT, deadline_seconds: int = 3600) -> dict[str, Any]:
    """A Job that downloads gs://bucket/object_name and loads it over the tenant's (stopped) database."""
    _check(tenant_id, namespace, bucket, object_name, image)
    download = _gcloud_container("download", f"gs://{bucket}/{object_name}", f"{SCRATCH}/{layout.database}.dump")
    load = _neo4j_container("load", ["load", layout.database, f"--from-path={SCRATCH}", "--overwrite-destination=true"],
                            image, layout)
    return _job("load", tenant_id, namespace, bucket, object_name, image, ksa, layout, deadline_seconds, download, load)


# --- running Jobs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobOutcome:
    succeeded: bool
    message: str


class JobRunner(Protocol):
    def run(self, namespace: str, manifest: dict[str, Any], timeout: float) -> JobOutcome: ...


class KubernetesJobRunner:
    """Runs a Job through the Kubernetes API, stopping the StatefulSet the Job names first (see the module)."""

    def __init__(self, kubeconfig: str | None = None, *, apis: tuple[Any, Any, Any] | None = None,
                 poll_seconds: float = 5.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        if apis is None:
            apis = self._apis(kubeconfig)
        self.batch, self.apps, self.core = apis
        self.poll, self.sleep, self.clock = poll_seconds, sleep, clock

    @staticmethod
    def _apis(kubeconfig: str | None) -> tuple[Any, Any, Any]:
        import yaml
        from kubernetes import client, config

        try:
            data = yaml.safe_load(kubeconfig or "")
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            api = config.new_client_from_config_dict(data)
        except (yaml.YAMLError, ValueError, config.ConfigException) as exc:
            raise GraphError(f"the kubeconfig is not usable ({str(exc).splitlines()[0][:200]}); pass the tenant "
                             "stack's `kubeconfig` output") from None
        return client.BatchV1Api(api), client.AppsV1Api(api), client.CoreV1Api(api)

    def _wait_no_pods(self, namespace: str, selector: str, deadline: float) -> bool:
        while True:
            if not self.core.list_namespaced_pod(namespace, label_selector=selector).items:
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(self.poll)

    def run(self, namespace: str, manifest: dict[str, Any], timeout: float) -> JobOutcome:
        from kubernetes.client.rest import ApiException

        name = manifest["metadata"]["name"]
        notes = manifest["metadata"].get("annotations") or {}
        statefulset, selector = notes.get(STOP_ANNOTATION), notes.get(SELECTOR_ANNOTATION)
        deadline = self.clock() + timeout
        previous = 0
        try:
            if statefulset:
                previous = self.apps.read_namespaced_stateful_set_scale(statefulset, namespace).spec.replicas or 0
                if previous:
                    self.apps.patch_namespaced_stateful_set_scale(statefulset, namespace, {"spec": {"replicas": 0}})
                if not self._wait_no_pods(namespace, selector, deadline):
                    return self._finish(namespace, name, statefulset, previous, JobOutcome(
                        False, f"{statefulset} pods did not stop within {timeout:.0f}s; Job {name} not started"), ran=False)
            try:
                self.batch.create_namespaced_job(namespace, manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                # The Job from an earlier, interrupted run: follow it rather than start a second one.
            outcome = self._follow(namespace, name, deadline)
        except ApiException as exc:
            outcome = JobOutcome(False, f"Kubernetes API: {exc.status} {exc.reason}")
        return self._finish(namespace, name, statefulset, previous, outcome, ran=True)

    def _follow(self, namespace: str, name: str, deadline: float) -> JobOutcome:
        while True:
            status = self.batch.read_namespaced_job_status(name, namespace).status
            for cond in status.conditions or []:
                if cond.status == "True" and cond.type == "Complete":
                    return JobOutcome(True, f"Job {name} completed")
                if cond.status == "True" and cond.type == "Failed":
                    return JobOutcome(False, f"Job {name} failed: {cond.reason}: {cond.message}")
            if self.clock() >= deadline:
                self.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
                return JobOutcome(False, f"Job {name} did not finish in time and was deleted")
            self.sleep(self.poll)

    def _finish(self, namespace: str, name: str, statefulset: str | None, previous: int, outcome: JobOutcome,
                ran: bool) -> JobOutcome:
        if not statefulset or not previous:
            return outcome
        # Neo4j must not start while a dump or load pod still holds its volume.
        if ran and not self._wait_no_pods(namespace, f"job-name={name}", self.clock() + 300):
            return JobOutcome(False, f"{outcome.message}; its pods are still running, so {statefulset} stays scaled to "
                                     f"0: once they are gone, run `kubectl -n {namespace} scale statefulset "
                                     f"{statefulset} --replicas={previous}`")
        self.apps.patch_namespaced_stateful_set_scale(statefulset, namespace, {"spec": {"replicas": previous}})
        return outcome


# --- the store contract ------------------------------------------------------------------------------------------

def summary(store: objects.Store, object_name: str) -> Summary:
    """The dump object: it must exist and be non-empty."""
    found = [o for o in store.objects(object_name) if o.name == object_name]
    if not found:
        raise GraphError(f"no graph dump at {store.url}/{object_name}")
    info = found[0]
    if info.size == 0:
        raise GraphError(f"the graph dump {store.url}/{object_name} is empty; dump again")
    part = {"count": 1, "checksum": info.md5, "bytes": info.size}
    return Summary(kind=KIND, count=1, checksum=info.md5, parts={"neo4j.dump": part})


def export(runner: JobRunner, tenant: str, namespace: str, bucket: str, *, object_name: str | None = None,
           store: objects.Store | None = None, image: str = NEO4J_IMAGE, ksa: str = "app",
           layout: Neo4jLayout = DEFAULT_LAYOUT, timeout: float = 3600) -> dict[str, Any]:
    """Dump the tenant's graph into gs://bucket/object_name through a Job; returns the manifest entry, read back
    from the bucket (object, size, MD5)."""
    object_name = object_name or f"graph/{tenant}/{layout.database}.dump"
    manifest = dump_job(tenant, namespace, bucket, object_name, image, ksa=ksa, layout=layout,
                        deadline_seconds=int(timeout))
    outcome = runner.run(namespace, manifest, timeout)
    if not outcome.succeeded:
        raise GraphError(f"tenant '{tenant}': graph dump failed: {outcome.message}")
    s = summary(store or objects.open_store(f"gs://{bucket}"), object_name)
    return {"kind": KIND, "tenant": tenant, "database": layout.database, "object": f"gs://{bucket}/{object_name}",
            "size": s.parts["neo4j.dump"]["bytes"], "md5": s.checksum, "job": manifest["metadata"]["name"]}


def load(runner: JobRunner, tenant: str, namespace: str, bucket: str, object_name: str, *, image: str = NEO4J_IMAGE,
         ksa: str = "app", layout: Neo4jLayout = DEFAULT_LAYOUT, timeout: float = 3600) -> str:
    """Load gs://bucket/object_name over the tenant's graph through a Job (the StatefulSet stopped meanwhile);
    returns the Job's name. A re-run follows the Job an interrupted run started (its name is deterministic)."""
    manifest = load_job(tenant, namespace, bucket, object_name, image, ksa=ksa, layout=layout,
                        deadline_seconds=int(timeout))
    outcome = runner.run(namespace, manifest, timeout)
    if not outcome.succeeded:
        raise GraphError(f"tenant '{tenant}': graph load failed: {outcome.message}")
    return manifest["metadata"]["name"]
