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

# Every bench/*.py, each with small sizes so the whole target takes about a minute
# (tests/test_small_truths.py checks none is missing); run one alone for steadier figures.
bench:  ## print benchmark figures
	uv run python bench/kernel.py --runs 200
	uv run python bench/session_store.py
	uv run python bench/providers.py --calls 50 --history-calls 20
	uv run python bench/history_load.py --loads 50
	uv run python bench/run_cpu.py --rounds 50 --daemon
	uv run python bench/pipeline.py --n 300 --rounds 1 --latency-count 200
	uv run python bench/gateway.py --n 500
	uv run python bench/gateway_instructions.py --n 200
	uv run python bench/context.py --messages 2000 --chunks 2000 --runs 50
	uv run python bench/attention.py --sessions 4 --waves 6
	uv run python bench/governance.py --calls 5000 --rounds 3
	uv run python bench/approvals.py --samples 10
	uv run python bench/capabilities.py --reads 1000 --commands 20 --fetches 40
	uv run python bench/console.py --sessions 100000 --requests 50 --rounds 1
	uv run python bench/quality.py --checks 2000 --delegations 200 --rounds 3
	uv run python bench/mcp_calls.py --calls 500 --rounds 5 --sessions 100 --runs 20
	uv run python bench/soak.py --signals 2000 --sessions 100 --every 1000
