"""A recording Pulumi runtime: runs a real stack program in-process, with no engine and no cloud.

Each stack runs in a fresh `contextvars.Context` with its own event loop, so the Pulumi SDK's ambient
state (settings, root stack, config) is new for every stack. The monitor records every registration as
the engine would receive it: inputs in camelCase wire form (secrets replaced by a marker, never their
value), and the resource options (protect, retainOnDelete, provider, dependsOn, aliases,
additionalSecretOutputs). Invokes that are not mocked on purpose fail loudly, and a URN registered twice
is an error rather than the silent last-one-wins of the stock mocks.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from google.protobuf import json_format

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import SETTINGS, get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

SECRET = "[secret]"
UNKNOWN = "[unknown]"
ORGANIZATION = "organization"  # the organization name of self-managed (DIY) backends

_SECRET_SIG = rpc._special_secret_sig
_SIG_KEY = rpc._special_sig_key
_UNKNOWN = rpc.UNKNOWN
_RESOURCE_SIG = rpc._special_resource_sig


_RUN_LOCK = threading.Lock()


class UnmockedInvokeError(RuntimeError):
    pass


class DuplicateUrnError(RuntimeError):
    pass


@dataclass
class ResourceRecord:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    options: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn, "type": self.type, "name": self.name, "parent": self.parent,
            "custom": self.custom, "inputs": self.inputs, "options": self.options,
        }


def _normalize(value: Any) -> Any:
    """Wire-form value -> plain JSON: secrets become a marker, unknowns a marker, references a URN."""
    if isinstance(value, dict):
        sig = value.get(_SIG_KEY)
        if sig == _SECRET_SIG:
            return SECRET
        if sig == _RESOURCE_SIG:
            return value.get("urn", "")
        if sig is not None:  # assets and archives: keep their path/text/uri, not their bytes
            return {k: _normalize(v) for k, v in value.items() if k != _SIG_KEY}
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == _UNKNOWN:
        return UNKNOWN
    return value


def _fake(kind: str, name: str, n: int = 16) -> str:
    return hashlib.sha256(f"{kind}/{name}".encode()).hexdigest()[:n]


def _private_ip(name: str) -> str:
    h = hashlib.sha256(name.encode()).digest()
    return f"10.{h[0] % 200 + 20}.{h[1]}.{h[2] % 250 + 2}"


class RecordingMocks(pmocks.Mocks):
    """Mock provider: outputs are the inputs plus the values a real provider would compute.

    `stack_outputs` maps a fully qualified stack name (org/project/stack) to (outputs, secret keys) for
    StackReference. `invokes` maps an invoke token to a function of its args; any other token raises.
    """

    def __init__(self, project: str, stack_outputs: Mapping[str, tuple[dict, list[str]]] | None = None,
                 invokes: Mapping[str, Callable[[dict], dict]] | None = None):
        self.project = project
        self.stack_outputs = dict(stack_outputs or {})
        self.invokes = dict(invokes or {})

    def call(self, args: pmocks.MockCallArgs):
        fn = self.invokes.get(args.token)
        if fn is None:
            raise UnmockedInvokeError(
                f"invoke '{args.token}' is not available offline; stack programs must not depend on it "
                "(or register it in tenancy.recorder.OFFLINE_INVOKES with a faithful fake)"
            )
        return fn(args.args)

    def new_resource(self, args: pmocks.MockResourceArgs):
        if args.typ == "pulumi:pulumi:StackReference":
            ref = args.inputs.get("name", "")
            if ref not in self.stack_outputs:
                raise KeyError(f"StackReference to '{ref}', which this offline run does not have; plan it first")
            outputs, secret_keys = self.stack_outputs[ref]
            # As the engine does: secret outputs arrive as secrets, so whatever uses them stays secret.
            wrapped = {k: ({_SIG_KEY: _SECRET_SIG, "value": v} if k in secret_keys else v) for k, v in outputs.items()}
            return f"{ref}", {"name": ref, "outputs": wrapped, "secretOutputNames": list(secret_keys)}
        state = dict(args.inputs)
        state.update(computed_outputs(args.typ, args.name, args.inputs, self.project))
        rid = state.pop("__id", None) or f"{args.name}-id"
        return rid, state


def computed_outputs(typ: str, name: str, inputs: Mapping[str, Any], project: str) -> dict[str, Any]:
    """Values a provider computes on create, faked deterministically so dependent resources can use them."""
    proj = inputs.get("project") or project
    if typ == "gcp:container/cluster:Cluster":
        ca = base64.b64encode(f"fake-ca-{name}".encode()).decode()
        return {"endpoint": _private_ip(name), "masterAuth": {**(inputs.get("masterAuth") or {}), "clusterCaCertificate": ca},
                "selfLink": f"https://container.googleapis.com/v1/projects/{proj}/locations/{inputs.get('location')}/clusters/{inputs.get('name', name)}"}
    if typ == "gcp:sql/databaseInstance:DatabaseInstance":
        iname = inputs.get("name", name)
        return {"privateIpAddress": _private_ip(iname), "connectionName": f"{proj}:{inputs.get('region')}:{iname}",
                "selfLink": f"https://sqladmin.googleapis.com/sql/v1beta4/projects/{proj}/instances/{iname}"}
    if typ in ("gcp:compute/network:Network", "gcp:compute/subnetwork:Subnetwork", "gcp:compute/globalAddress:GlobalAddress"):
        kind = typ.split(":")[-1].lower() + "s"
        return {"selfLink": f"https://www.googleapis.com/compute/v1/projects/{proj}/global/{kind}/{inputs.get('name', name)}",
                "__id": f"projects/{proj}/global/{kind}/{inputs.get('name', name)}"}
    if typ == "gcp:serviceaccount/account:Account":
        email = f"{inputs.get('accountId')}@{proj}.iam.gserviceaccount.com"
        return {"email": email, "member": f"serviceAccount:{email}", "name": f"projects/{proj}/serviceAccounts/{email}",
                "__id": f"projects/{proj}/serviceAccounts/{email}"}
    if typ == "random:index/randomPassword:RandomPassword":
        return {"result": "offline-" + _fake("password", name, 24)}
    if typ == "gcp:secretmanager/secret:Secret":
        return {"name": f"projects/{proj}/secrets/{inputs.get('secretId')}",
                "__id": f"projects/{proj}/secrets/{inputs.get('secretId')}"}
    if typ == "gcp:identityplatform/tenant:Tenant":
        return {"name": f"{inputs.get('displayName')}-{_fake('idp', name, 5)}"}
    if typ == "gcp:dns/managedZone:ManagedZone":
        return {"nameServers": [f"ns-cloud-a{i}.googledomains.com." for i in range(1, 5)]}
    if typ == "gcp:kms/cryptoKey:CryptoKey":
        return {"__id": f"{inputs.get('keyRing')}/cryptoKeys/{inputs.get('name', name)}"}
    if typ == "gcp:kms/keyRing:KeyRing":
        return {"__id": f"projects/{proj}/locations/{inputs.get('location')}/keyRings/{inputs.get('name', name)}"}
    if typ == "gcp:projects/serviceIdentity:ServiceIdentity":
        agent = {"container.googleapis.com": "container-engine-robot"}.get(inputs.get("service", ""), "gcp-sa-" + inputs.get("service", "x").split(".")[0])
        email = f"service-{int(_fake('project', proj, 10), 16) % 10**12}@{agent}.iam.gserviceaccount.com"
        return {"email": email, "member": f"serviceAccount:{email}"}
    if typ == "gcp:organizations/project:Project":
        return {"number": str(int(_fake("project", name, 10), 16) % 10**12)}
    if typ == "gcp:compute/globalAddress:GlobalAddress" or typ == "gcp:compute/address:Address":
        return {"address": _private_ip(name)}
    if typ == "gcp:logging/projectSink:ProjectSink":
        return {"writerIdentity": f"serviceAccount:service-{_fake('sink', name, 8)}@gcp-sa-logging.iam.gserviceaccount.com"}
    if typ == "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig":
        return {"uptimeCheckId": f"{inputs.get('displayName', name).split()[0].replace('.', '-')}-{_fake('uptime', name, 6)}"}
    if typ == "gcp:monitoring/notificationChannel:NotificationChannel":
        return {"name": f"projects/{proj}/notificationChannels/{int(_fake('channel', name, 10), 16)}"}
    if typ == "gcp:firestore/database:Database":
        return {"__id": f"projects/{proj}/databases/{inputs.get('name', name)}"}
    if typ == "gcp:storage/bucket:Bucket":
        return {"url": f"gs://{inputs.get('name', name)}", "selfLink": f"https://www.googleapis.com/storage/v1/b/{inputs.get('name', name)}",
                "__id": inputs.get("name", name)}
    return {}


class RecordingMonitor(pmocks.MockMonitor):
    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.records: list[ResourceRecord] = []
        self._lock = threading.Lock()

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        _ensure_event_loop()
        raw = json_format.MessageToDict(request.object)
        record = ResourceRecord(
            urn=urn, type=request.type, name=request.name, parent=request.parent,
            custom=bool(request.custom), inputs=_normalize(raw), options=_options(request),
        )
        with self._lock:
            if urn in self.resources:
                raise DuplicateUrnError(f"duplicate URN {urn}: two resources of type {request.type} are named '{request.name}' under the same parent")
            self.resources[urn] = pmocks.MockMonitor.ResourceRegistration(urn, "", {})
            self.records.append(record)

        inputs = rpc.deserialize_properties(request.object)
        args = pmocks.MockResourceArgs(typ=request.type, name=request.name, inputs=inputs, provider=request.provider,
                                       resource_id=request.importId, custom=request.custom or False)
        id_, state = self.mocks.new_resource(args)
        # The engine keeps these outputs secret (e.g. a generated password's result); so do we.
        for key in request.additionalSecretOutputs:
            if key in state:
                state[key] = {_SIG_KEY: _SECRET_SIG, "value": state[key]}
        obj = _sync_await(rpc.serialize_properties(state, {}))
        with self._lock:
            self.resources[urn] = pmocks.MockMonitor.ResourceRegistration(urn, id_, state)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj)

    def ReadResource(self, request):  # noqa: N802
        if request.type == "pulumi:pulumi:StackReference":
            urn = self.make_urn(request.parent, request.type, request.name)
            with self._lock:
                self.records.append(ResourceRecord(
                    urn=urn, type=request.type, name=request.name, parent=request.parent, custom=True,
                    inputs={"name": request.name}, options={"protect": False, "retainOnDelete": False,
                                                            "provider": None, "dependsOn": [], "aliases": [],
                                                            "additionalSecretOutputs": []}))
            return super().ReadResource(request)
        raise UnmockedInvokeError(f"reading existing resource {request.type} '{request.name}' (a .get()) is not available offline")


def _options(request) -> dict[str, Any]:
    aliases = []
    for alias in request.aliases:
        d = json_format.MessageToDict(alias)
        aliases.append(d.get("urn") or d.get("spec") or d)
    aliases.extend(request.aliasURNs)
    return {
        "protect": bool(request.protect),
        "retainOnDelete": bool(request.retainOnDelete),
        "provider": request.provider or None,
        "dependsOn": sorted(set(request.dependencies)),
        "aliases": aliases,
        "additionalSecretOutputs": sorted(request.additionalSecretOutputs),
        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
        "ignoreChanges": list(request.ignoreChanges),
    }


@dataclass
class RunResult:
    records: list[ResourceRecord]
    outputs: dict[str, Any]           # plain values; secret outputs as the marker
    raw_outputs: dict[str, Any]       # real values, for StackReference consumers in the same run only
    secret_outputs: list[str] = field(default_factory=list)


def run_program(program: Callable[[], None], *, project: str, stack: str, config: Mapping[str, Any],
                secret_keys: list[str] | None = None,
                stack_outputs: Mapping[str, tuple[dict, list[str]]] | None = None,
                invokes: Mapping[str, Callable[[dict], dict]] | None = None) -> RunResult:
    """Run `program` as stack `stack` of `project` under the recording runtime; return what it declared.

    One program at a time per process: two Pulumi runtimes on two threads deadlock inside the SDK, so
    threads queue here (the plan's parallelism comes from worker processes instead)."""
    ctx = contextvars.Context()
    with _RUN_LOCK:
        return ctx.run(_run_in_context, program, project, stack, dict(config), list(secret_keys or []),
                       dict(stack_outputs or {}), dict(invokes or {}))


def _run_in_context(program, project, stack, config, secret_keys, stack_outputs, invokes) -> RunResult:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        mocks = RecordingMocks(project, stack_outputs, invokes)
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor,
                                 organization=ORGANIZATION)
        # The SDK's pending-output set defaults to one shared object; give this run its own.
        SETTINGS.outputs = set()
        SETTINGS.lock = threading.Lock()
        pulumi.runtime.set_all_config(config, secret_keys)
        _sync_await(run_pulumi_func(program))
        root = get_root_resource()
        exported = dict(getattr(root, "outputs", {}) or {})

        async def resolve() -> tuple[dict, dict, list[str]]:
            plain, raw, secret = {}, {}, []
            for key, value in exported.items():
                out = pulumi.Output.from_input(value)
                val = await out.future(with_unknowns=True)
                is_secret = await out.is_secret()
                raw[key] = _unwrap(val)
                if is_secret:
                    secret.append(key)
                    plain[key] = SECRET
                else:
                    plain[key] = _unwrap(val)
            return plain, raw, secret

        plain, raw, secret = _sync_await(resolve())
        return RunResult(records=monitor.records, outputs=plain, raw_outputs=raw, secret_outputs=sorted(secret))
    finally:
        _drain(loop)
        asyncio.set_event_loop(None)
        loop.close()


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a failed program left pending, so its errors do not surface in a later run."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.set_exception_handler(lambda _loop, _ctx: None)


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
