"""`python -m dashboard [--host 127.0.0.1] [--port 8090]`: the operator dashboard."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from dashboard.app import build_app
from dashboard.auth import Auth, require_token
from scripts.runtime import EXIT_OK, EXIT_USAGE, open_queue, run_command
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.logging import configure_logging

log = structlog.get_logger("dashboard")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard",
        description="Serve the operator dashboard: queues, consumers, tasks and dead letters. "
        "Every page needs DASHBOARD_TOKEN (a login form, or Authorization: Bearer).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; put a TLS proxy in front to expose it)",
    )
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090)")
    parser.add_argument(
        "--refresh",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how often open pages refresh themselves (default 5)",
    )
    return parser.parse_args(argv)


async def serve(settings: Settings, token: str, args: argparse.Namespace) -> int:
    async with open_queue(settings, "dashboard") as queue:
        app = build_app(queue, Auth(token), args.refresh)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            log.info("dashboard_started", url=f"http://{args.host}:{args.port}/")
            await _until_signalled()
        finally:
            await runner.cleanup()
    log.info("dashboard_stopped")
    return EXIT_OK


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        token = require_token(settings)
    except ConfigError as exc:
        sys.stderr.write(f"dashboard cannot start: {exc}\n")
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_json)
    return run_command(serve(settings, token, args))


if __name__ == "__main__":
    sys.exit(main())
