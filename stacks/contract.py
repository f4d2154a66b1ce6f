"""What the platform stack exports and tenant stacks read through their StackReference."""

from tenancy.record_format import RECORD_OUTPUT

ENVIRONMENT = "environment"
GCP_PROJECT = "gcpProject"
REGION = "region"
BASE_DOMAIN = "baseDomain"
NETWORK_ID = "networkId"
SUBNET_ID = "subnetId"
CLUSTER_NAME = "clusterName"
CLUSTER_ENDPOINT = "clusterEndpoint"
KUBECONFIG = "kubeconfig"                 # secret
WORKLOAD_POOL = "workloadPool"
INGRESS_NAMESPACE = "ingressNamespace"
INGRESS_IP = "ingressIp"
CLUSTER_ISSUER = "clusterIssuer"
DNS_ZONE = "dnsZone"
APP_CHART = "appChart"
APP_CHART_VERSION = "appChartVersion"
TENANT_DIRECTORY = "tenantDirectory"        # JSON text: {tenant id: entry}
DEPLOYED_RECORD = RECORD_OUTPUT            # JSON text: {"catalog": the catalogue deployed, "notes": {...}}
OPERATOR_NAMESPACE = "operatorNamespace"    # with the operator: where its deployers' Kubernetes service accounts are
GROUPS_DOMAIN = "groupsDomain"              # the Google Workspace domain of the clusters' Google Groups for RBAC

REQUIRED_BY_TENANTS = (ENVIRONMENT, GCP_PROJECT, REGION, BASE_DOMAIN, NETWORK_ID, CLUSTER_NAME, KUBECONFIG,
                       WORKLOAD_POOL, INGRESS_NAMESPACE, CLUSTER_ISSUER, APP_CHART, APP_CHART_VERSION)
