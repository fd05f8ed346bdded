"""The fixtures of the state contract tests.

``backend`` makes handles of one backend (memory, Redis; the ports with a third backend
add ``sqlite`` by overriding ``backend`` in their module); ``state`` is one handle.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import delete_redis_keys, require_redis
from tests.state_contract.backends import Backend, make_backend


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = make_backend(request.param, tmp_path)
    yield made
    await made.close()


@pytest.fixture
def state(backend: Backend) -> Any:
    return backend.new()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[str, str]]:
    url, prefix = require_redis(), f"loomtest-{uuid.uuid4().hex[:12]}"
    yield url, prefix
    await delete_redis_keys(url, prefix)
