"""Pulumi entry point: decide which stack this is (platform or tenant) and build it."""

import stacks

stacks.main()
