"""Traffic in: the DNS zone, the ingress controller, cert-manager and its ClusterIssuer."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from tenancy import naming

INGRESS_NAMESPACE = "ingress-nginx"
CERT_MANAGER_NAMESPACE = "cert-manager"
CLUSTER_ISSUER = "letsencrypt"
INGRESS_CLASS = "nginx"
# ingress-nginx ConfigMap keys that decide whether client-supplied forwarding headers are believed.
FORWARDED_HEADERS_DISTRUSTED = {"use-forwarded-headers": "false", "enable-real-ip": "false",
                                "compute-full-forwarded-for": "false", "use-proxy-protocol": "false"}


@dataclass(frozen=True)
class EdgeArgs:
    project: str
    region: str
    base_domain: str | None  # None: no DNS zone (a dedicated tenant's custom domain lives in its own DNS)
    acme_email: str
    labels: dict[str, str]
    k8s_labels: dict[str, str]
    # The regional address's name (naming.ingress_address): unique in its project.
    address_name: str
    # Split across stacks: the zone alone (the global stack, `address=False`), or the address,
    # its records in an existing zone (`zone_name`) and the controllers (a cell).
    zone_name: pulumi.Input[str] | None = None
    records: tuple[str, ...] = ("app", "*")       # A records to the address: labels under base_domain
    address: bool = True
    controllers: bool = True


class Edge(pulumi.ComponentResource):
    """Static IP, DNS zone with app.<domain> and *.<domain>, ingress-nginx, cert-manager, ClusterIssuer."""

    ip_address: pulumi.Output[str]
    zone_name: pulumi.Output[str]
    name_servers: pulumi.Output[list]

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:edge:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ip = None
        self.ip_address = pulumi.Output.from_input("")
        if args.address:
            ip = gcp.compute.Address(f"{name}-ingress-ip", name=args.address_name, project=args.project,
                                     region=args.region, address_type="EXTERNAL", network_tier="PREMIUM",
                                     labels=args.labels, opts=child)
            self.ip_address = ip.address
        self.zone_name = pulumi.Output.from_input(args.zone_name or "")
        if args.base_domain:
            zone_name = args.zone_name if args.zone_name is not None else self._zone(name, args)
            if ip is not None:
                for label in args.records:
                    gcp.dns.RecordSet(f"{name}-{'wildcard' if label == '*' else label}", project=args.project,
                                      managed_zone=zone_name, name=f"{label}.{args.base_domain}.", type="A", ttl=300,
                                      rrdatas=[ip.address], opts=child)
        if ip is not None and args.controllers:
            self._controllers(name, args, ip)
        self.register_outputs({"ip_address": self.ip_address, "zone_name": self.zone_name})

    def _zone(self, name: str, args: EdgeArgs) -> pulumi.Output[str]:
        zone = gcp.dns.ManagedZone(
            f"{name}-zone", name=naming.dns_zone(args.base_domain), project=args.project,
            dns_name=f"{args.base_domain}.", visibility="public", dnssec_config={"state": "on"},
            description=f"tenancy platform zone for {args.base_domain}", labels=args.labels,
            force_destroy=False, opts=pulumi.ResourceOptions(parent=self, protect=True))
        self.zone_name = zone.name
        self.name_servers = zone.name_servers
        return zone.name

    def _controllers(self, name: str, args: EdgeArgs, ip: gcp.compute.Address) -> None:
        ingress_ns = self._namespace(f"{name}-ingress-ns", INGRESS_NAMESPACE, args, privileged=False)
        cm_ns = self._namespace(f"{name}-cert-manager-ns", CERT_MANAGER_NAMESPACE, args, privileged=False)
        k8s.helm.v3.Release(
            f"{name}-ingress-nginx", name="ingress-nginx", namespace=INGRESS_NAMESPACE, chart="ingress-nginx",
            version="4.13.3", repository_opts={"repo": "https://kubernetes.github.io/ingress-nginx"},
            values={"controller": {
                "ingressClassResource": {"name": INGRESS_CLASS, "default": False},
                # A passthrough L4 load balancer: with `Local` the packets keep the client's address, which
                # is what per-IP rate limits and logs must use.
                "service": {"loadBalancerIP": ip.address, "externalTrafficPolicy": "Local"},
                # Nothing in front of the controller sets X-Forwarded-For or PROXY protocol, so any such header
                # is the client's own claim: trusting it lets anyone pick the address rate limits count.
                "config": FORWARDED_HEADERS_DISTRUSTED,
                "metrics": {"enabled": True},
                "podLabels": args.k8s_labels,
                "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            }},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ingress_ns]))
        cert_manager = k8s.helm.v3.Release(
            f"{name}-cert-manager", name="cert-manager", namespace=CERT_MANAGER_NAMESPACE, chart="cert-manager",
            version="v1.18.2", repository_opts={"repo": "https://charts.jetstack.io"},
            values={"crds": {"enabled": True}, "podLabels": args.k8s_labels,
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cm_ns]))
        k8s.apiextensions.CustomResource(
            f"{name}-cluster-issuer", api_version="cert-manager.io/v1", kind="ClusterIssuer",
            metadata={"name": CLUSTER_ISSUER, "labels": args.k8s_labels},
            spec={"acme": {
                "server": "https://acme-v02.api.letsencrypt.org/directory", "email": args.acme_email,
                "privateKeySecretRef": {"name": f"{CLUSTER_ISSUER}-account-key"},
                "solvers": [{"http01": {"ingress": {"ingressClassName": INGRESS_CLASS}}}],
            }},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cert_manager]))

    def _namespace(self, resource_name: str, ns_name: str, args: EdgeArgs, privileged: bool) -> k8s.core.v1.Namespace:
        level = "privileged" if privileged else "baseline"
        return k8s.core.v1.Namespace(resource_name, metadata={"name": ns_name, "labels": {
            **args.k8s_labels, "pod-security.kubernetes.io/enforce": level,
            "pod-security.kubernetes.io/warn": "restricted"}}, opts=pulumi.ResourceOptions(parent=self))
