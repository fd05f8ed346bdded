"""Shared pytest configuration."""

pytest_plugins = ["tests.fakes.llm_server"]
