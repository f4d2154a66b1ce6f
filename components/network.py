"""The VPC every cluster and private database of one project sits in.

Physical names (network, subnet, peering range, router, NAT) are `naming.network_resource(name_prefix, role)`:
two networks in one project (the platform's and dedicated tenants' without their own project) must not share
a name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from tenancy import naming

@dataclass(frozen=True)
class NetworkArgs:
    project: str
    region: str
    subnet_cidr: str
    pods_cidr: str
    services_cidr: str
    labels: dict[str, str]
    # Prefix of every physical name (tenancy/naming.py: PLATFORM_NETWORK_PREFIX, OWN_PROJECT_NETWORK_PREFIX
    # or network_prefix(env, tenant id)).
    name_prefix: str


class Network(pulumi.ComponentResource):
    """VPC, subnet with secondary ranges for pods and services, private services access, Cloud NAT."""

    network_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    pods_range: str = "pods"
    services_range: str = "services"

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:gcp:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def physical(role: str) -> str:
            return naming.network_resource(args.name_prefix, role)

        # Custom-mode network: every subnet is declared here, nothing appears implicitly in new regions.
        vpc = gcp.compute.Network(f"{name}-vpc", name=physical("vpc"), project=args.project,
                                  auto_create_subnetworks=False, routing_mode="REGIONAL", opts=child)
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet", name=physical("subnet"), project=args.project, region=args.region, network=vpc.id,
            ip_cidr_range=args.subnet_cidr,
            # Private nodes reach Google APIs without public IPs.
            private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=self.pods_range, ip_cidr_range=args.pods_cidr),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=self.services_range, ip_cidr_range=args.services_cidr),
            ],
            log_config=gcp.compute.SubnetworkLogConfigArgs(aggregation_interval="INTERVAL_5_SEC", flow_sampling=0.5),
            opts=child,
        )
        # Private services access: Cloud SQL gets private IPs in this range and never a public one.
        peering_range = gcp.compute.GlobalAddress(
            f"{name}-sql-range", name=physical("sql-range"), project=args.project, network=vpc.id,
            purpose="VPC_PEERING", address_type="INTERNAL", prefix_length=16, labels=args.labels, opts=child)
        self.private_services = gcp.servicenetworking.Connection(
            f"{name}-sql-peering", network=vpc.id, service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[peering_range.name], opts=child)
        router = gcp.compute.Router(f"{name}-router", name=physical("router"), project=args.project, region=args.region,
                                    network=vpc.id, opts=child)
        # Egress for private nodes (image pulls from outside Google, webhooks) without node public IPs.
        gcp.compute.RouterNat(
            f"{name}-nat", name=physical("nat"), project=args.project, region=args.region, router=router.name,
            nat_ip_allocate_option="AUTO_ONLY", source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"), opts=child)
        self.network_id = vpc.id
        self.subnet_id = subnet.id
        self.subnet_cidr = args.subnet_cidr
        self.register_outputs({"network_id": self.network_id, "subnet_id": self.subnet_id})
