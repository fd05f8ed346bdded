"""The chaos suite attaches its Loom processes' logs to a failing test's report, as the
integration tests do."""

from tests.integration.conftest import pytest_runtest_makereport

__all__ = ["pytest_runtest_makereport"]
