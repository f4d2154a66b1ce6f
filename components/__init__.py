"""Pulumi ComponentResources of the platform. Typed arguments only: no YAML, no CLI, no Automation API."""
