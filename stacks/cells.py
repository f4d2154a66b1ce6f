"""An environment's platform: a small global stack plus one stack per cell, pool shard and identity shard, so no
stack and no Kubernetes object grows with the fleet. A small environment has one of each.

| stack | holds | bounded by |
|---|---|---|
| `<env>` (global) | network, DNS zone, Identity Platform configuration, storage audit config, access-log bucket, the deploying identities of the units (tenancy/operator/deployers.py) | nothing per tenant |
| `<env>.cell-<n>` | a shared GKE cluster, its edge (address, records, ingress, certificates), the system namespace, the operator (cell 1: with a Kubernetes service account per deployer, one per unit and per dedicated tenant with a project of its own), the directory of the tenants it hosts | `tenancy:cellCapacity` |
| `<env>.pool-<n>` | a pooled Cloud SQL instance, Firestore database, bucket, namespace, application (in cell 1's cluster), SQL job and the directory of its tenants | `tenancy:poolShardCapacity` |
| `<env>.identity-<k>` | Identity Platform tenants, by a stable hash of the tenant id (kept once deployed) | `tenancy:identityShards` |

Cell 1 and pool shard 1 keep every logical and physical name of the one platform stack earlier versions
deployed, so `tenancy migrate` moves such an environment's state (`pulumi state move`) and nothing is
recreated. Each unit stack reads its environment's config from stacks/Pulumi.<env>.yaml (it has no
config file of its own), and the global stack's outputs (and cell 1's, and its identity shards') through
StackReferences. A dedicated tenant has a home cell too: its directory entry and deployed record live there.
"""

from __future__ import annotations

import dataclasses
import json

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.directory import DirectoryArgs, TenantDirectory
from components.edge import Edge, EdgeArgs
from components.identity import IdentityArgs, IdentityPlatform, IdentityTenant, authorized_domains
from components.labels import k8s_labels, labels
from components.storage import storage_data_access_audit
from stacks import contract
from stacks.platform import (SHARED, CellNet, Kube, cell_cluster, cell_facts, deployer_identities, directory_entry,
                             environment_facts, environment_log_bucket, export_all, export_operator_namespace,
                             gcp_provider, install_operator, platform_network, pooled_tier, registry_database)
from tenancy import envconfig, naming
from tenancy.catalog import Catalog, Model
from tenancy.envconfig import PlatformConfig, require_catalog_fits
from tenancy.fleet.capacity import CELL_NETWORK_KEYS, KEYS, NAMESPACE, Capacity
from tenancy.fleet.placement import Placement, place
from tenancy.record_format import CELLS, LAYOUT_OUTPUT, record_json
from tenancy.topology import unit_names

IDENTITY_TENANTS = "identityTenants"      # identity shard output: {tenant id: Identity Platform tenant name}


def placement_for(env: str, catalog: Catalog, cfg: PlatformConfig) -> tuple[Capacity, Placement]:
    """Every unit stack places the whole catalogue the same way (deployed placements are sticky, new tenants
    are placed by the same deterministic rules), then builds its own share. Within one process (an offline plan
    and its workers) the same catalogue is placed once."""
    require_catalog_fits(catalog, cfg)
    capacity = capacity_of(env, cfg)
    key = (id(catalog), capacity)
    hit = _PLACED.get(key)
    if hit is None or hit[0] is not catalog:
        hit = _PLACED[key] = (catalog, place(catalog, capacity))
    return capacity, hit[1]


# (id of a catalogue, capacity) -> (that catalogue, its placement); tenancy/plan.py seeds it before forking.
_PLACED: dict[tuple[int, Capacity], tuple[Catalog, Placement]] = {}


def remember_placement(catalog: Catalog, placement: Placement) -> None:
    _PLACED[(id(catalog), placement.capacity)] = (catalog, placement)


def capacity_of(env: str, cfg: PlatformConfig) -> Capacity:
    raw = envconfig.load_stack_config(env)
    return Capacity.validate({k: raw.get(f"{NAMESPACE}:{k}") for k in (*KEYS, *CELL_NETWORK_KEYS)}, env, cfg.gcp_project)


def ref(env: str, unit: str | None = None) -> pulumi.StackReference:
    stack = naming.stack_name(env) if unit is None else naming.unit_stack(env, unit)
    return pulumi.StackReference(f"{pulumi.get_organization()}/{envconfig.project_name()}/{stack}")


# ------------------------------------------------------------------------------------------------- global

def build_global(env: str, catalog: Catalog, cfg: PlatformConfig) -> None:
    """Network, DNS zone, Identity Platform configuration: nothing per tenant."""
    placement_for(env, catalog, cfg)      # a full environment is refused before anything is declared
    provider = gcp_provider(cfg)
    gopts = pulumi.ResourceOptions(provider=provider)
    net = platform_network(cfg, gopts)
    registry_database(env, cfg, net.network_id, [net.private_services], gopts)
    storage_data_access_audit("storage-data-access-audit", cfg.gcp_project, gopts)
    environment_log_bucket(env, cfg, gopts)
    zone = Edge("edge", EdgeArgs(project=cfg.gcp_project, region=cfg.region, base_domain=cfg.base_domain,
                                 acme_email=cfg.acme_email, labels=labels(env, SHARED), k8s_labels=k8s_labels(env, SHARED),
                                 address_name=naming.ingress_address(), address=False, controllers=False), opts=gopts)
    IdentityPlatform("identity", IdentityArgs(project=cfg.gcp_project, authorized_domains=authorized_domains(cfg.base_domain),
                                              tenants=[]), opts=gopts)
    export_all(environment_facts(env, cfg, net.network_id, net.subnet_id, zone.zone_name))
    pulumi.export(LAYOUT_OUTPUT, CELLS)
    # Each unit's deploying identity: the global stack runs as the platform's, which alone may make the units'
    # identities and grant them roles.
    deployer_identities(env, cfg, catalog, provider, unit_names(capacity_of(env, cfg)))
    export_operator_namespace(env)
    # The catalogue's plans and its offboarded tenants (they have no unit any more); every other tenant's record
    # is its unit's (`_directory`).
    gone = tuple(t for t in catalog.tenants if not t.in_directory)
    pulumi.export(contract.DEPLOYED_RECORD, record_json(_subset(catalog, gone), {}))


# --------------------------------------------------------------------------------------------------- cells

def build_cell(env: str, cell: str, catalog: Catalog, cfg: PlatformConfig, tenant_facing_only: bool = False) -> None:
    capacity, placement = placement_for(env, catalog, cfg)
    if cell not in capacity.cell_names:
        raise _undeclared(capacity, "cell", cell, "cells", capacity.cells)
    glob = ref(env)
    provider = gcp_provider(cfg)
    if naming.unit_index(cell) == 1:
        where = CellNet(glob.require_output(contract.NETWORK_ID), glob.require_output(contract.SUBNET_ID),
                        cfg.network_cidr, "pods", "services", cfg.master_cidr)
    else:
        ranges = capacity.cell_network(cell)
        prefix = naming.cell_subnet_prefix(cell)
        subnet = gcp.compute.Subnetwork(
            "cell-subnet", name=naming.network_resource(prefix, "subnet"), project=cfg.gcp_project, region=cfg.region,
            network=glob.require_output(contract.NETWORK_ID), ip_cidr_range=ranges.network_cidr,
            private_ip_google_access=True,
            secondary_ip_ranges=[{"range_name": "pods", "ip_cidr_range": ranges.pods_cidr},
                                 {"range_name": "services", "ip_cidr_range": ranges.services_cidr}],
            log_config={"aggregation_interval": "INTERVAL_5_SEC", "flow_sampling": 0.5},
            opts=pulumi.ResourceOptions(provider=provider))
        where = CellNet(glob.require_output(contract.NETWORK_ID), subnet.id, ranges.network_cidr, "pods", "services",
                        ranges.master_cidr)
    # Its namespace tenants, and the dedicated tenants it is home to (their directory entries and records).
    hosted = [t for t in catalog.tenants if t.in_directory and t.model is not Model.POOLED
              and placement.tenants[t.id].cell == cell]
    # Cell 1 serves the platform hosts (app, auth) and the wildcard; later cells name their tenants' hosts.
    records = ("app", "*") if naming.unit_index(cell) == 1 else \
        tuple(sorted(t.subdomain for t in hosted if t.model is Model.NAMESPACE))
    cluster, edge, system_ns = cell_cluster(env, cfg, cell, provider, where, glob.require_output(contract.DNS_ZONE), records)
    export_all(cell_facts(cluster, edge))
    pulumi.export("systemNamespace", system_ns.metadata["name"])
    if tenant_facing_only:
        return
    if naming.unit_index(cell) == 1:
        install_operator(env, cfg, catalog, provider, cluster, unit_names(capacity))
    _directory(env, cfg, catalog, placement, hosted, system_ns.metadata["name"], cluster.provider)


# ----------------------------------------------------------------------------------------------- pool shards

def build_pool(env: str, shard: str, catalog: Catalog, cfg: PlatformConfig) -> None:
    capacity, placement = placement_for(env, catalog, cfg)
    if shard not in capacity.pool_shard_names:
        raise _undeclared(capacity, "pool shard", shard, "poolShards", capacity.pool_shards)
    glob, home = ref(env), ref(env, naming.cell(1))
    provider = gcp_provider(cfg)
    # Pool shards' applications run in cell 1's cluster, beside the platform hosts they serve.
    kube = k8s.Provider("cell-1", kubeconfig=home.require_output(contract.KUBECONFIG), enable_server_side_apply=True)
    pooled = [t for t in catalog.by_model(Model.POOLED) if t.in_directory and placement.tenants[t.id].pool_shard == shard]
    pooled_tier(env, catalog, cfg, pooled, shard, provider, glob.require_output(contract.NETWORK_ID), [],
                Kube(kube, home.require_output(contract.WORKLOAD_POOL), home.require_output("systemNamespace")),
                placement.tenants)
    # Its own logical name: the platform stack's `directory` (tenancy-system in cell 1) becomes cell 1's.
    _directory(env, cfg, catalog, placement, pooled, naming.pool_namespace(shard), kube, name="pool-directory")


# -------------------------------------------------------------------------------------------- identity shards

def build_identity(env: str, shard: str, catalog: Catalog, cfg: PlatformConfig) -> None:
    """The Identity Platform tenants of one shard. Nothing else: a tier change or a move between cells never
    touches this stack, so a user pool is never recreated or re-homed."""
    capacity, placement = placement_for(env, catalog, cfg)
    if shard not in capacity.identity_shard_names:
        raise _undeclared(capacity, "identity shard", shard, "identityShards", capacity.identity_shards)
    mine = [t for t in catalog.tenants if t.in_directory and placement.tenants[t.id].identity_shard == shard]
    identity = IdentityPlatform("identity", IdentityArgs(
        project=cfg.gcp_project, authorized_domains=[], config=False,
        tenants=[IdentityTenant(t.id, naming.identity_display_name(t.id)) for t in mine]),
        opts=pulumi.ResourceOptions(provider=gcp_provider(cfg)))
    ids = sorted(identity.tenant_names)
    pulumi.export(IDENTITY_TENANTS, pulumi.Output.all(*[identity.tenant_names[i] for i in ids]).apply(
        lambda names: json.dumps(dict(zip(ids, names)), sort_keys=True)))


# ------------------------------------------------------------------------------------------------- shared

def _directory(env: str, cfg: PlatformConfig, catalog: Catalog, placement: Placement, tenants: list,
               namespace: pulumi.Input[str], provider: pulumi.ProviderResource, name: str = "directory") -> None:
    """This unit's share of the directory (a ConfigMap the application reads and the `tenantDirectory` output),
    and its share of the deployed record (`deployedRecord`: its tenants, with where they are placed, which is
    what keeps them there on the next deployment)."""
    shards = sorted({placement.tenants[t.id].identity_shard for t in tenants})
    names = {s: ref(env, s).require_output(IDENTITY_TENANTS).apply(json.loads) for s in shards}
    # A tenant new in this change has no Identity Platform tenant until its identity shard is updated (deploys
    # update identity shards first; a preview before that shows it empty).
    identity = {t.id: names[placement.tenants[t.id].identity_shard].apply(lambda d, i=t.id: d.get(i, ""))
                for t in tenants}
    directory = TenantDirectory(name, DirectoryArgs(
        namespace=namespace, labels=k8s_labels(env, SHARED),
        entries={t.id: directory_entry(t, env, cfg, placement.tenants[t.id]) for t in tenants},
        identity_tenants=identity, compact=True), opts=pulumi.ResourceOptions(provider=provider))
    pulumi.export(contract.TENANT_DIRECTORY, directory.json)
    # The deployed record of its tenants: their catalogue entries, notes and placements (tenancy/lifecycle/record.py
    # merges every unit's). Bounded like the unit.
    pulumi.export(contract.DEPLOYED_RECORD, record_json(_subset(catalog, tuple(tenants)),
                                                       {t.id: placement.tenants[t.id].to_json() for t in tenants}))


def _subset(catalog: Catalog, tenants: tuple) -> Catalog:
    ids = {t.id for t in tenants}
    return dataclasses.replace(catalog, tenants=tenants, notes={k: v for k, v in catalog.notes.items() if k in ids})


def _undeclared(capacity: Capacity, unit: str, name: str, key: str, count: int) -> Exception:
    from tenancy.errors import ConfigError

    return ConfigError(f"{capacity.where} declares {count} {unit}(s) (tenancy:{key}); stack for {name} has nothing to "
                       f"build: raise tenancy:{key}, or destroy the stack once it is empty")
