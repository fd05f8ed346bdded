"""Shared pytest configuration."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from loom.logs import CHATTY_LOGGERS

pytest_plugins = ["tests.fakes.llm_server"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what a test's ``loom.logs.configure`` did to the root and the chatty loggers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, was in chatty.items():
        logging.getLogger(name).setLevel(was)
