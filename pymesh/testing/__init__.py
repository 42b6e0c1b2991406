"""Test fixtures for users' own tests (also a pytest plugin: ``pymesh.testing.plugin``)."""
