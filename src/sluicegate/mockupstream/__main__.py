"""Command line: ``python -m sluicegate.mockupstream --host H --port P``."""

from __future__ import annotations

import argparse

from sluicegate.mockupstream.control import BEHAVIORS
from sluicegate.mockupstream.server import DEFAULT_HOST, DEFAULT_PORT, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sluicegate.mockupstream",
        description="Mock OpenAI- and Anthropic-compatible upstream for tests, benchmarks and "
        "demos. Failure modes via header x-mock-behavior, model 'mock-<behavior>' or rules "
        f"programmed with PUT /_mock/behavior: {', '.join(BEHAVIORS)}. Counters at "
        "GET /_mock/stats.",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    args = parser.parse_args(argv)
    run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
