"""Shared pytest fixtures for the Lantern test suite."""
