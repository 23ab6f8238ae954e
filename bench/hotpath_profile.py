"""Where a proxied request's CPU goes: py-spy samples one Sluicegate worker (Postgres + Redis, a
key under every guardrail, the set-up of bench/compare.py) while wrk drives it at saturation,
then prints the share of samples by package and by the innermost Sluicegate function.

    python bench/hotpath_profile.py [--stream] [--seconds 12] [--connections 32] [--out DIR]

Writes DIR/profile-{chat,stream}.txt (py-spy's collapsed stacks) and a flame graph .svg
(default DIR: /tmp/sluicegate-profiles; keep them out of git). Needs py-spy (`pip install
py-spy`) and, like bench/compare.py, wrk, Postgres and Redis on localhost.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import compare

FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def where(path: str) -> str:
    """A frame's file as a package ('redis', 'asyncio') or a Sluicegate capability."""
    tail = path.split("site-packages/")[-1].split("src/")[-1]
    if tail.startswith("sluicegate/"):
        return "/".join(tail.split("/")[:2])
    return tail.split("/")[0].removesuffix(".py")


def summarize(collapsed: Path, top: int = 25) -> str:
    by_package: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples, frames = int(count), stack.split(";")
        total += samples
        leaf = FRAME.match(frames[-1])
        by_package[where(leaf.group(2)) if leaf else "?"] += samples
        owner = "(outside Sluicegate's code)"
        for frame in reversed(frames):
            found = FRAME.match(frame)
            entry = found.group(2).endswith(("cli.py", "__main__.py")) if found else True
            if found and "sluicegate/" in found.group(2) and not entry:
                owner = found.group(1)
                break
        by_function[owner] += samples
    lines = [f"{total} samples", "", "| share | package (where the sample's innermost frame is) |"]
    lines += ["| ---: | --- |"]
    lines += [f"| {100 * n / total:.1f}% | {name} |" for name, n in by_package.most_common(top)]
    lines += ["", "| share | innermost Sluicegate function on the stack |", "| ---: | --- |"]
    lines += [f"| {100 * n / total:.1f}% | {name} |" for name, n in by_function.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="streamed requests (10 chunks)")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sluicegate-profiles"))  # noqa: S108
    options = parser.parse_args()
    if shutil.which("py-spy") is None:
        parser.error("py-spy not found: pip install py-spy")
    options.out.mkdir(parents=True, exist_ok=True)
    kind = "stream" if options.stream else "chat"
    args = compare.parse_args(["--targets", "direct,sluicegate", "--soak", "0"])
    tmp = Path(tempfile.mkdtemp(prefix="sluicegate-profile-"))
    run_id = secrets.token_hex(4)
    database, prefix = f"sluicegate_profile_{run_id}", f"sgprofile_{run_id}"
    try:
        target = compare.start_all(args, tmp, database, prefix)[-1]
        assert target.server is not None
        compare.check(target)
        stores = compare.store_pids()
        compare.closed_loop(target, options.connections, options.stream, 3, stores)  # warm-up
        outputs = {}
        for form, suffix in (("raw", "txt"), ("flamegraph", "svg")):
            outputs[form] = options.out / f"profile-{kind}.{suffix}"
        pid = str(target.server.process.pid)
        spies = [
            subprocess.Popen(  # noqa: S603 - py-spy with our own arguments
                [
                    *("py-spy", "record", "--nonblocking", "-r", "250", "-f", form),
                    *("-o", str(path), "-d", str(options.seconds), "-p", pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for form, path in outputs.items()
        ]
        result = compare.closed_loop(
            target, options.connections, options.stream, options.seconds, stores
        )
        for spy in spies:
            spy.wait()
        print(f"{kind}, {options.connections} connections: {result.rps:,.0f} req/s, "
              f"{result.cpu_ms:.2f} ms gateway CPU per request (sampled by two py-spy at once, "
              "which slows it)\n")  # fmt: skip
        print(summarize(outputs["raw"]))
        print(f"\nflame graph: {outputs['flamegraph']}", file=sys.stderr)
        return 0
    finally:
        for server in reversed(args.servers):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        asyncio.run(compare.drop_stores(database, prefix))
        for each in args.prefixes:
            asyncio.run(compare.drop_keys(each))


if __name__ == "__main__":
    raise SystemExit(main())
