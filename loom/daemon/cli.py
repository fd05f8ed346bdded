"""The ``loom`` command line (also ``python -m loom``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from loom._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loom", description="Loom turns events into agent work.")
    parser.add_argument("--version", action="version", version=f"loom {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = commands.add_parser(
        "ask",
        help="run the agent once on a prompt and print its answer",
        description="Run the agent once on PROMPT and print its answer. Exits 1 when the "
        "run does not complete.",
    )
    ask.add_argument("prompt", help="what to ask the agent")
    ask.add_argument(
        "--model",
        default=None,
        help="provider:model, e.g. anthropic:claude-sonnet-4-5 or test (default: from the "
        "provider keys in the environment, else test)",
    )
    ask.add_argument("--instructions", default="", help="the agent's instructions")
    ask.add_argument("--json", action="store_true", help="print the whole run result as JSON")
    return parser


async def _ask(args: argparse.Namespace) -> int:
    from loom import Agent

    agent = Agent(args.model, args.instructions)
    try:
        result = await agent.run(args.prompt)
    finally:
        await agent.aclose()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        print(result.output)
    else:
        print(f"run {result.status.value}: {result.error}", file=sys.stderr)
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.command == "ask":
        try:
            return asyncio.run(_ask(args))
        except ValueError as exc:  # e.g. an unknown provider: say what is wrong, no traceback
            parser.exit(2, f"loom: error: {exc}\n")
    parser.print_help()
    return 2
