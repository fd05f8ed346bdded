"""The ``loom`` command line (also ``python -m loom``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from loom._version import __version__
from loom.daemon import cli_approve

ROLE_HELP = {
    "run": "run every role (gateway, scheduler, attention, worker) in one process",
    "gateway": "run the HTTP gateway role",
    "scheduler": "run the scheduler role (cron, heartbeat)",
    "attention": "run the attention role (signal consumer)",
    "worker": "run the worker role (session runs)",
}


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def limit(text: str) -> int:
    """``--limit N`` of every command: a count of at least 1 (0 would mean nothing, or
    everything, depending on who you ask: refused alike everywhere)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loom", description="Loom turns events into agent work.")
    parser.add_argument("--version", action="version", version=f"loom {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to run")

    for name, text in ROLE_HELP.items():
        role = commands.add_parser(name, help=text, description=text + ".")
        role.add_argument(
            "app",
            nargs="?",
            help="module:attribute naming a loom.daemon.Daemon or a loom.Agent "
            "(default: the agent from LOOM_* settings)",
        )

    send = commands.add_parser(
        "send",
        help="publish one signal",
        description="Publish one signal through the configured broker (with a memory:// "
        "broker: POST it to the running process's /signals).",
    )
    send.add_argument("summary", help="what happened")
    send.add_argument("--source", default="cli", help="who sent it (default: cli)")
    send.add_argument("--type", default="message", help="what kind of event (default: message)")
    send.add_argument(
        "--urgency",
        default="normal",
        choices=["low", "normal", "high", "critical"],
        help="how urgent (default: normal)",
    )
    send.add_argument("--session", default=None, help="session id (default: LOOM_DEFAULT_SESSION)")
    send.add_argument("--payload", default=None, help="a JSON object")
    send.add_argument(
        "--dedupe-key", default=None, help="a signal with a key already seen is a duplicate"
    )

    commands.add_parser(
        "config",
        help="print the effective settings, secrets masked",
        description="Print the effective settings (LOOM_* variables, LOOM_CONFIG) as JSON, "
        "secrets masked.",
    )

    feedback = commands.add_parser(
        "feedback",
        help="show recent feedback events",
        description="Show the newest feedback events (run outcomes, tool failures, quality "
        "verdicts, explicit feedback) from the state, oldest first.",
    )
    feedback.add_argument("--session", default=None, help="only this session's events")
    feedback.add_argument("--limit", type=limit, default=20, help="how many (default 20)")
    feedback.add_argument("--json", action="store_true", help="one JSON object per line")

    dlq = commands.add_parser(
        "dlq",
        help="inspect or replay dead letters",
        description="Inspect or replay the dead letters of the RabbitMQ broker.",
    )
    dlq_commands = dlq.add_subparsers(
        dest="dlq_command", metavar="ACTION", required=True, help="what to do"
    )
    dlq_list = dlq_commands.add_parser("list", help="show dead letters with their reasons")
    dlq_list.add_argument("--limit", type=limit, default=20, help="how many (default 20)")
    dlq_replay = dlq_commands.add_parser("replay", help="send dead letters back to their queue")
    dlq_replay.add_argument("--limit", type=limit, default=None, help="how many (default all)")

    cli_approve.add_parser(commands)

    ask = commands.add_parser(
        "ask",
        help="run the agent once on a prompt and print its answer",
        description="Run the agent once on PROMPT and print its answer. Exits 1 when the "
        "run does not complete.",
    )
    ask.add_argument("prompt", help="what to ask the agent")
    ask.add_argument("--model", default=None, help="provider:model (default: LOOM_MODEL, keys)")
    ask.add_argument("--instructions", default=None, help="the agent's instructions")
    ask.add_argument("--json", action="store_true", help="print the whole run result as JSON")
    return parser


def load_app(spec: str | None) -> Any:
    """Import ``module:attribute`` (the current directory is importable, as with uvicorn)."""
    from loom.agent import Agent
    from loom.daemon.app import Daemon

    if spec is None:
        return Daemon()
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"APP must look like module:attribute, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as problem:
        raise CommandError(f"cannot import {module_name!r}: {problem}") from problem
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CommandError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, Daemon):
        return target
    if isinstance(target, Agent):
        return Daemon(target)
    raise CommandError(f"{spec} is a {type(target).__name__}, not a loom Daemon or Agent")


async def _serve(spec: str | None, roles: Sequence[str]) -> int:
    from loom.broker.base import BrokerUnavailable
    from loom.daemon.app import AddressInUse, InsecureBinding
    from loom.state.base import StateUnavailable

    daemon = load_app(spec)
    try:
        await daemon.serve(roles)
    except (InsecureBinding, AddressInUse, BrokerUnavailable, StateUnavailable) as problem:
        raise CommandError(str(problem)) from problem
    return 0


async def _send(args: argparse.Namespace) -> int:
    from loom.daemon.settings import Settings
    from loom.signals import RuntimeSignal

    settings = Settings()
    payload: dict[str, Any] = {}
    if args.payload:
        try:
            payload = json.loads(args.payload)
        except json.JSONDecodeError as problem:
            raise CommandError(f"--payload is not JSON: {problem}") from problem
        if not isinstance(payload, dict):
            raise CommandError("--payload must be a JSON object")
    signal = RuntimeSignal.create(
        args.summary,
        source=args.source,
        type=args.type,
        urgency=args.urgency,
        payload=payload,
        session_id=args.session or settings.default_session,
        dedupe_key=args.dedupe_key,
    )
    if settings.broker_url.startswith("memory:"):
        return await _post_to_running(settings, signal)
    from loom.broker.base import BrokerUnavailable
    from loom.wire import broker_from_url, publish_signal

    broker = broker_from_url(settings.broker_url, namespace=settings.namespace)
    try:
        await broker.start()
        await publish_signal(broker, signal)
    except BrokerUnavailable as problem:
        print(f"loom: signal not sent: {problem}", file=sys.stderr)
        return 1
    finally:
        await broker.close()
    print(json.dumps({"id": signal.id, "status": "accepted"}))
    return 0


async def _post_to_running(settings: Any, signal: Any) -> int:
    import httpx

    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{settings.http.port}/signals"
    body = signal.model_dump_json().encode()
    headers = {"content-type": "application/json"}
    if settings.api_token is not None:
        headers["authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    elif settings.webhook_secret is not None:  # the process then wants a signature
        from loom.intake.signing import sign

        headers.update(sign(settings.webhook_secret.get_secret_value(), body))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as problem:
        print(
            f"loom: signal not sent: no loom process answers at {url} ({problem}); start one "
            "with `loom run`, or set LOOM_BROKER_URL to a RabbitMQ URL",
            file=sys.stderr,
        )
        return 1
    # The gateway's answer, printed as the amqp:// path prints its own: the same JSON
    # ({"id", "status"}) whichever broker is configured.
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text}
    if response.status_code in (200, 202) and isinstance(answer, dict):
        print(json.dumps(answer))
        return 0
    reason = answer.get("error", answer) if isinstance(answer, dict) else answer
    print(
        f"loom: signal not sent: {url} answered {response.status_code}: {reason}", file=sys.stderr
    )
    return 1


async def _dlq(args: argparse.Namespace) -> int:
    from loom.daemon.settings import Settings
    from loom.wire import broker_from_url

    settings = Settings()
    if settings.broker_url.startswith("memory:"):
        raise CommandError("dead letters live in the broker: set LOOM_BROKER_URL to RabbitMQ")
    from loom.broker.base import BrokerUnavailable

    broker = broker_from_url(settings.broker_url, namespace=settings.namespace)
    try:
        await broker.start()
    except BrokerUnavailable as problem:
        raise CommandError(str(problem)) from problem
    try:
        if args.dlq_command == "list":
            for letter in await broker.dead_letters(args.limit):
                print(
                    json.dumps(
                        {
                            "message_id": letter.message.message_id,
                            "origin": letter.origin_queue,
                            "reason": letter.reason,
                            "body": letter.message.body.decode("utf-8", "replace")[:2000],
                        }
                    )
                )
        else:
            count = await broker.replay_dead_letters(args.limit)
            print(f"replayed {count} dead letter(s)")
    finally:
        await broker.close()
    return 0


async def _feedback(args: argparse.Namespace) -> int:
    from loom.daemon.settings import Settings
    from loom.policies.feedback import FeedbackEvent
    from loom.state import state_from_url
    from loom.state.base import StateUnavailable

    settings = Settings()
    if settings.state_url.startswith("memory:"):
        raise CommandError(
            "feedback lives in the state of the running process: set LOOM_STATE_URL to Redis"
        )
    from loom.daemon.app import state_options

    state = state_from_url(settings.state_url, **state_options(settings.state_url, settings))
    try:
        await state.start()
        events = [
            FeedbackEvent.from_json(text)
            for text in await state.read_feedback(args.session, args.limit)
        ]
    except StateUnavailable as problem:
        raise CommandError(str(problem)) from problem
    finally:
        await state.close()
    for event in events:
        if args.json:
            print(event.to_json())
        else:
            score = "" if event.score is None else f"{event.score:+g}"
            run = event.run_id or "-"
            comment = event.comment.replace("\n", " ")[:120]
            print(
                f"{event.at.isoformat(timespec='seconds')}  {event.session_id}  {run}  "
                f"{event.kind}  {event.value or '-'}  {score}  {event.source}  {comment}".rstrip()
            )
    return 0


async def _ask(args: argparse.Namespace) -> int:
    from loom import Agent
    from loom.daemon.settings import Settings

    settings = Settings()
    agent = Agent(
        args.model or settings.model,
        args.instructions if args.instructions is not None else settings.instructions,
    )
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


def _configure_logging(*, verbose: bool) -> None:
    """Structured logs for every command and role (LOOM_LOG__FORMAT, LOOM_LOG__LEVEL), with
    every secret of the settings masked; ``-v`` means DEBUG."""
    from loom import logs
    from loom.daemon.settings import Settings

    try:
        settings: Settings | None = Settings()
    except Exception:  # the command reports bad settings itself, as a one-line error
        settings = None
    logs.configure(settings, level=logging.DEBUG if verbose else None)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except BrokenPipeError:
        # `loom config | head -1`: the reader is gone, and so is the need to write. Point
        # stdout at /dev/null so the flush at exit does not raise again; exit 1 as Python's
        # documentation recommends (the shell reports the pipe's last command anyway).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def serve_forever(main: Coroutine[Any, Any, int]) -> int:
    """Run a serving process on uvloop's event loop where it is installed (uvicorn[standard]
    brings it; not on Windows): its sockets, timers and callbacks run in C, which is most of
    what accepting a signal costs besides parsing, checking and publishing it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform uvicorn[standard] leaves it out on
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(verbose=args.verbose)
    try:
        if args.command in ROLE_HELP:
            from loom.daemon.app import ROLES

            roles = ROLES if args.command == "run" else (args.command,)
            return serve_forever(_serve(args.app, roles))
        if args.command == "send":
            return asyncio.run(_send(args))
        if args.command == "config":
            from loom.daemon.settings import Settings

            print(json.dumps(Settings().masked(), indent=2))
            return 0
        if args.command == "dlq":
            return asyncio.run(_dlq(args))
        if args.command == "feedback":
            return asyncio.run(_feedback(args))
        if args.command == "ask":
            return asyncio.run(_ask(args))
        if args.command == "approve":
            return asyncio.run(cli_approve.approve(args))
    except CommandError as problem:
        parser.exit(2, f"loom: error: {problem}\n")
    except (ValueError, FileNotFoundError) as problem:  # settings and model errors
        from pydantic import ValidationError

        from loom.errors import validation_details
        from loom.intake.settings import describe_settings_error

        # One line each: the settings name the variable; other input names its fields.
        if line := describe_settings_error(problem):
            parser.exit(2, f"loom: error: bad settings: {line}\n")
        if isinstance(problem, ValidationError):
            parser.exit(2, f"loom: error: {validation_details(problem)}\n")
        parser.exit(2, f"loom: error: {problem}\n")
    parser.print_help()
    return 2
