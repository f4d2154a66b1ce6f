"""The graph store: neo4j-admin dump/load Jobs validated offline, the Job runner against recording fakes of the
Kubernetes client APIs, exports read back from a real GCS API server."""

from __future__ import annotations

import hashlib
import base64
import re
import uuid
from types import SimpleNamespace as NS

import kubernetes_validate
import pytest
from kubernetes.client.rest import ApiException

from tenancy.stores import StoreError, objects
from tenancy.stores import graph
from tests.test_store_objects import drain
from tests.test_tenant_stacks import K8S_VERSION

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def containers(job):
    spec = job["spec"]["template"]["spec"]
    return spec["initContainers"] + spec["containers"]


@pytest.mark.parametrize("build", [graph.dump_job, graph.load_job])
def test_jobs_validate_strictly_and_meet_pod_security_restricted(build):
    job = build("acme", "tenant-acme", "dev-acme-exports", "graph/acme/neo4j.dump")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]["template"]["spec"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400 and job["spec"]["activeDeadlineSeconds"] == 3600
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "app"
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert not spec.get("hostNetwork") and not spec.get("hostPID")
    assert all("hostPath" not in v for v in spec["volumes"])
    for c in containers(job):
        assert DIGEST.search(c["image"]), c["image"]
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}, c["name"]
        assert set(c["resources"]["requests"]) >= {"cpu", "memory"} and set(c["resources"]["limits"]) >= {"cpu", "memory"}
    data = next(v for v in spec["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "data-neo4j-0"}}
    assert job["metadata"]["annotations"][graph.STOP_ANNOTATION] == "neo4j"


def test_dump_and_load_commands():
    dump = graph.dump_job("acme", "tenant-acme", "dev-acme-exports", "graph/acme/neo4j.dump")
    first, second = containers(dump)
    assert first["command"] == ["neo4j-admin", "database", "dump", "neo4j", "--to-path=/backup"]
    assert {"name": "data", "mountPath": "/data", "subPath": "data"} in first["volumeMounts"]
    assert second["command"][-2:] == ["/backup/neo4j.dump", "gs://dev-acme-exports/graph/acme/neo4j.dump"]
    load = graph.load_job("acme", "tenant-acme", "dev-acme-exports", "graph/acme/neo4j.dump")
    first, second = containers(load)
    assert first["command"][-2:] == ["gs://dev-acme-exports/graph/acme/neo4j.dump", "/backup/neo4j.dump"]
    assert second["command"] == ["neo4j-admin", "database", "load", "neo4j", "--from-path=/backup",
                                 "--overwrite-destination=true"]
    assert dump["metadata"]["name"] != load["metadata"]["name"]
    assert dump["metadata"]["name"] == graph.dump_job("acme", "tenant-acme", "dev-acme-exports", "graph/acme/neo4j.dump")["metadata"]["name"]
    long = graph.dump_job("a" * 40 + "-very-long-tenant-id", "tenant-x", "b-bucket", "o")["metadata"]["name"]
    assert len(long) <= 63


@pytest.mark.parametrize("args, message", [
    (("acme", "Tenant_Acme", "bkt", "o"), r"namespace 'Tenant_Acme' is not a Kubernetes namespace name"),
    (("acme", "tenant-acme", "gs://bkt", "o"), r"'gs://bkt' is not a bucket name"),
    (("acme", "tenant-acme", "bkt", "dir/"), r"dump object name 'dir/' must be a plain object name"),
    (("acme", "tenant-acme", "bkt", "o", "neo4j:5.26"), r"image 'neo4j:5.26' is not pinned by digest"),
])
def test_bad_job_input_is_refused_in_one_line(args, message):
    with pytest.raises(StoreError, match=message):
        graph.dump_job(*args)


def test_layout_matches_the_neo4j_release_the_tenant_stack_deploys(sample_plan):
    _, data, _ = sample_plan
    releases = [r for s in data["stacks"] for r in s["resources"]
                if r["type"] == "kubernetes:helm.sh/v3:Release" and r["inputs"].get("chart") == "neo4j"]
    assert releases, "no tenant in tenants.yaml deploys Neo4j"
    for r in releases:
        assert graph.layout_from_release(r["inputs"]) == graph.DEFAULT_LAYOUT, r["urn"]
    with pytest.raises(StoreError, match="neo4j data volume mode 'share'"):
        graph.layout_from_release({"name": "neo4j", "values": {"volumes": {"data": {"mode": "share"}}}})


class Recorder:
    """Records calls on a fake BatchV1Api / AppsV1Api / CoreV1Api; answers from scripted queues."""

    def __init__(self, calls: list, api: str, answers: dict[str, list]):
        self.calls, self.api, self.answers = calls, api, answers

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.calls.append((self.api, method, args, kwargs))
            queue = self.answers.get(method)
            if not queue:
                return None
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call


def pods(n):
    return NS(items=[object()] * n)


def job_status(kind=None, reason="", message=""):
    conditions = [NS(type=kind, status="True", reason=reason, message=message)] if kind else None
    return NS(status=NS(conditions=conditions))


def runner(answers):
    calls: list = []
    clock = {"t": 0.0}
    apis = tuple(Recorder(calls, name, answers.get(name, {})) for name in ("batch", "apps", "core"))
    r = graph.KubernetesJobRunner(apis=apis, poll_seconds=5, sleep=lambda s: clock.__setitem__("t", clock["t"] + s),
                                  clock=lambda: clock["t"])
    return r, calls


JOB = graph.dump_job("acme", "tenant-acme", "dev-acme-exports", "graph/acme/neo4j.dump")
NAME = JOB["metadata"]["name"]


def test_runner_stops_neo4j_runs_the_job_and_restarts_it():
    r, calls = runner({
        "apps": {"read_namespaced_stateful_set_scale": [NS(spec=NS(replicas=1))]},
        "core": {"list_namespaced_pod": [pods(1), pods(0)]},
        "batch": {"read_namespaced_job_status": [job_status(), job_status("Complete")]},
    })
    outcome = r.run("tenant-acme", JOB, timeout=600)
    assert outcome == graph.JobOutcome(True, f"Job {NAME} completed")
    assert [(api, m, a, k) for api, m, a, k in calls] == [
        ("apps", "read_namespaced_stateful_set_scale", ("neo4j", "tenant-acme"), {}),
        ("apps", "patch_namespaced_stateful_set_scale", ("neo4j", "tenant-acme", {"spec": {"replicas": 0}}), {}),
        ("core", "list_namespaced_pod", ("tenant-acme",), {"label_selector": "helm.neo4j.com/instance=neo4j"}),
        ("core", "list_namespaced_pod", ("tenant-acme",), {"label_selector": "helm.neo4j.com/instance=neo4j"}),
        ("batch", "create_namespaced_job", ("tenant-acme", JOB), {}),
        ("batch", "read_namespaced_job_status", (NAME, "tenant-acme"), {}),
        ("batch", "read_namespaced_job_status", (NAME, "tenant-acme"), {}),
        ("core", "list_namespaced_pod", ("tenant-acme",), {"label_selector": f"job-name={NAME}"}),
        ("apps", "patch_namespaced_stateful_set_scale", ("neo4j", "tenant-acme", {"spec": {"replicas": 1}}), {}),
    ]


def test_runner_reports_a_failed_job_and_still_restarts_neo4j():
    r, calls = runner({
        "apps": {"read_namespaced_stateful_set_scale": [NS(spec=NS(replicas=1))]},
        "core": {"list_namespaced_pod": [pods(0)]},
        "batch": {"create_namespaced_job": [ApiException(status=409, reason="AlreadyExists")],
                  "read_namespaced_job_status": [job_status("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]},
    })
    outcome = r.run("tenant-acme", JOB, timeout=600)
    assert outcome == graph.JobOutcome(False, f"Job {NAME} failed: BackoffLimitExceeded: Job has reached the specified backoff limit")
    assert calls[-1] == ("apps", "patch_namespaced_stateful_set_scale", ("neo4j", "tenant-acme", {"spec": {"replicas": 1}}), {})


def test_runner_deletes_a_job_that_times_out_and_keeps_neo4j_stopped_while_its_pods_run():
    r, calls = runner({
        "apps": {"read_namespaced_stateful_set_scale": [NS(spec=NS(replicas=1))]},
        "core": {"list_namespaced_pod": [pods(0), pods(1)]},   # Neo4j gone; then the Job's pod never goes
        "batch": {"read_namespaced_job_status": [job_status()]},
    })
    outcome = r.run("tenant-acme", JOB, timeout=30)
    assert not outcome.succeeded
    assert outcome.message == (f"Job {NAME} did not finish in time and was deleted; its pods are still running, so neo4j "
                               "stays scaled to 0: once they are gone, run `kubectl -n tenant-acme scale statefulset "
                               "neo4j --replicas=1`")
    assert ("batch", "delete_namespaced_job", (NAME, "tenant-acme"), {"propagation_policy": "Foreground"}) in calls
    assert [c for c in calls if c[1] == "patch_namespaced_stateful_set_scale"] == [
        ("apps", "patch_namespaced_stateful_set_scale", ("neo4j", "tenant-acme", {"spec": {"replicas": 0}}), {})]


def test_runner_from_a_kubeconfig_string():
    kubeconfig = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.0.1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""
    r = graph.KubernetesJobRunner(kubeconfig)
    assert type(r.batch).__name__ == "BatchV1Api" and r.batch.api_client.configuration.host == "https://10.0.0.1"
    with pytest.raises(StoreError, match=r"the kubeconfig is not usable .*pass the tenant stack's `kubeconfig` output"):
        graph.KubernetesJobRunner("just text")


class UploadingRunner:
    """Stands in for the cluster: records the manifest and puts the dump where the Job would."""

    def __init__(self, bucket, data: bytes, succeed: bool = True):
        self.bucket, self.data, self.succeed, self.runs = bucket, data, succeed, []

    def run(self, namespace, manifest, timeout):
        self.runs.append((namespace, manifest, timeout))
        if not self.succeed:
            return graph.JobOutcome(False, "Job x failed: BackoffLimitExceeded: boom")
        target = containers(manifest)[1]["command"][-1]
        self.bucket.blob(target.split("/", 3)[3]).upload_from_string(self.data)
        return graph.JobOutcome(True, "Job completed")


@pytest.fixture
def bucket(gcs_server):
    from google.cloud import storage

    drain(gcs_server)
    return storage.Client(project="test").create_bucket(f"exports-{uuid.uuid4().hex[:8]}")


def test_export_reads_the_dump_back_from_the_bucket(bucket):
    dump = b"NEO4J-DUMP" + bytes(range(256)) * 40
    r = UploadingRunner(bucket, dump)
    entry = graph.export(r, "acme", "tenant-acme", bucket.name, timeout=900)
    assert entry == {"kind": "graph", "tenant": "acme", "database": "neo4j",
                     "object": f"gs://{bucket.name}/graph/acme/neo4j.dump", "size": len(dump),
                     "md5": base64.b64encode(hashlib.md5(dump).digest()).decode(), "job": NAME}
    (namespace, manifest, timeout), = r.runs
    assert (namespace, timeout, manifest["spec"]["activeDeadlineSeconds"]) == ("tenant-acme", 900, 900)
    store = objects.open_store(f"gs://{bucket.name}")
    assert graph.summary(store, "graph/acme/neo4j.dump").count == 1


def test_export_failures_are_one_line_errors(bucket):
    with pytest.raises(StoreError, match=r"^tenant 'acme': graph dump failed: Job x failed: BackoffLimitExceeded: boom$"):
        graph.export(UploadingRunner(bucket, b"", succeed=False), "acme", "tenant-acme", bucket.name)
    with pytest.raises(StoreError, match=r"the graph dump gs://\S+/graph/acme/neo4j.dump is empty; dump again"):
        graph.export(UploadingRunner(bucket, b""), "acme", "tenant-acme", bucket.name)
    with pytest.raises(StoreError, match=r"no graph dump at gs://\S+/graph/other.dump"):
        graph.summary(objects.open_store(f"gs://{bucket.name}"), "graph/other.dump")
