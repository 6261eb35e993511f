"""Fixtures the CLI tests share with the core tests of the same code."""

from tests.core.test_weights import home, server  # noqa: F401  (a local weights server)
