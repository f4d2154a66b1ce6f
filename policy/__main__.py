"""Assembles the pack for `pulumi preview --policy-pack policy`. Rules live in rules/ (the list in rules/pack.py)."""

from pulumi_policy import PolicyPack

from rules import ALL_POLICIES  # the pack runs with policy/ as its working directory

PolicyPack(name="tenancy-isolation", policies=ALL_POLICIES)
