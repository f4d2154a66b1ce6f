"""GKE: clusters and node pools follow the CIS GKE benchmark; the control plane is not open to all."""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import ANY_CIDR, first, get

COMPUTE_DEFAULT_SA = re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$")


def gke_cluster_hardened(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:container/cluster:Cluster":
        return
    p = args.props
    checks = [
        (get(p, "workloadIdentityConfig", "workloadPool"), "Workload Identity must be on (workloadIdentityConfig.workloadPool): pods must not use node credentials"),
        (get(p, "privateClusterConfig", "enablePrivateNodes") is True, "private nodes must be on: nodes must have no public IPs"),
        (p.get("enableShieldedNodes") is True, "shielded nodes must be on (secure boot and integrity monitoring resist rootkits)"),
        (p.get("datapathProvider") == "ADVANCED_DATAPATH" or get(p, "networkPolicy", "enabled") is True,
         "network policy enforcement (Dataplane V2) must be on: tenant default-deny NetworkPolicies depend on it"),
        (p.get("enableLegacyAbac") in (None, False), "legacy ABAC must be off: it grants broad rights outside RBAC"),
        (get(p, "masterAuth", "clientCertificateConfig", "issueClientCertificate") in (None, False),
         "client certificates must be off: they cannot be revoked"),
        (get(p, "releaseChannel", "channel") not in (None, "UNSPECIFIED"), "a release channel must be set so security patches arrive"),
        (get(p, "databaseEncryption", "state") == "ENCRYPTED", "application-layer secrets encryption (Cloud KMS) must be on"),
        (p.get("enableKubernetesAlpha") in (None, False), "alpha features must be off: alpha clusters get no upgrades or SLA"),
        (bool(get(p, "loggingConfig", "enableComponents")) or p.get("loggingService") not in (None, "none"),
         "logging must be on (loggingConfig)"),
        (bool(get(p, "monitoringConfig", "enableComponents")) or p.get("monitoringService") not in (None, "none"),
         "monitoring must be on (monitoringConfig)"),
    ]
    for ok, message in checks:
        if not ok:
            report(f"GKE cluster: {message}")
    _check_control_plane_reach(p, report)
    node_config = p.get("nodeConfig")
    if node_config is not None:
        _check_node_config(node_config, "cluster's default node config", report)


def _check_control_plane_reach(p: dict, report: ReportViolation) -> None:
    """A public endpoint is only acceptable behind authorized networks that are not the whole internet."""
    if get(p, "privateClusterConfig", "enablePrivateEndpoint") is True:
        return
    man = first(p.get("masterAuthorizedNetworksConfig"))
    blocks = [b.get("cidrBlock") for b in (man or {}).get("cidrBlocks") or [] if isinstance(b, dict)]
    if not man or not blocks:
        report("GKE cluster: the control plane has a public endpoint and no authorized networks "
               "(masterAuthorizedNetworksConfig): it is reachable from anywhere")
    elif any(b in ANY_CIDR for b in blocks):
        report("GKE cluster: the control plane's authorized networks include 0.0.0.0/0: it is reachable from anywhere")
    if (man or {}).get("gcpPublicCidrsAccessEnabled") is True:
        report("GKE cluster: gcpPublicCidrsAccessEnabled lets every Google Cloud address reach the control plane")


def gke_node_pool_hardened(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:container/nodePool:NodePool":
        return
    p = args.props
    if get(p, "management", "autoRepair") is not True or get(p, "management", "autoUpgrade") is not True:
        report("GKE node pool: auto-repair and auto-upgrade must be on so nodes get security patches")
    _check_node_config(p.get("nodeConfig") or {}, "node pool", report)


def _check_node_config(nc: dict, where: str, report: ReportViolation) -> None:
    sa = nc.get("serviceAccount")
    if not sa or sa == "default" or (isinstance(sa, str) and COMPUTE_DEFAULT_SA.match(sa)):
        report(f"GKE {where}: nodes must run as a dedicated service account, never the Compute default (it has Editor)")
    if get(nc, "workloadMetadataConfig", "mode") != "GKE_METADATA":
        report(f"GKE {where}: workloadMetadataConfig.mode must be GKE_METADATA so pods cannot read node credentials")
    shielded = nc.get("shieldedInstanceConfig") or {}
    if shielded.get("enableSecureBoot") is not True or shielded.get("enableIntegrityMonitoring") is False:
        report(f"GKE {where}: shielded nodes need secure boot and integrity monitoring")
