"""Running the fleet's stacks on the Pulumi Kubernetes Operator (v2).

    settings.py   what the operator needs from the platform stack's config (repository, backend, identity)
    stacks.py     one `pulumi.com/v1` Stack object per Pulumi stack, names that fit the operator's 42 characters
    schema.py     validation of generated objects against the operator's CRD (schemas/pko/)
    overlay.py    the catalogue a rollout applies, as a difference from tenants.yaml at the rolled-out commit
    engine.py     `tenancy up --engine operator`: a rollout sets the commit on Stack objects and waits for them

The operator itself is installed by the platform stack (components/operator.py) when `tenancy:operator` is on.
"""
