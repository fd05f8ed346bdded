.PHONY: install run test lint format bench

install:  ## install Loom and its development tools from the lock file
	command -v uv >/dev/null || python3 -m pip install 'uv>=0.5'
	uv sync --locked --extra dev

run: install  ## run the daemon (all roles) on the embedded defaults
	uv run loom run

test: install  ## run the test suite
	uv run pytest

lint:  ## ruff and mypy --strict
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy

format:
	uv run ruff format .
	uv run ruff check --fix .

bench:  ## print benchmark figures
	uv run python bench/kernel.py
	uv run python bench/session_store.py
	uv run python bench/providers.py
	uv run python bench/pipeline.py
