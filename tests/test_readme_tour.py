"""The README's five-minute tour, run as written in an empty directory (only its ports moved to
free ones): the mock upstream, the providers file, `serve`, then bootstrap, an org, a key, a
chat call and the org's activity, each through the commands the README shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import clean_environment, free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent


def tour_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    tour = readme[readme.index("## A five-minute tour") :]
    tour = tour[: tour.index("\n## ", 1)]
    return re.findall(r"```sh\n(.*?)```", tour, re.DOTALL)


def test_the_readme_tour_works_as_written(tmp_path: Path) -> None:
    mock_block, serve_block, calls_block = tour_blocks()
    mock_port, gateway_port = free_port(), free_port()

    def moved(script: str) -> str:
        script = script.replace("18080", str(mock_port))
        script = script.replace("localhost:8080", f"localhost:{gateway_port}")
        return script.replace("sluicegate serve", f"sluicegate serve --port {gateway_port}")

    # The commands resolve as a reader's shell would: `sluicegate` and `python` on the PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = clean_environment({"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
    started: list[subprocess.Popen[bytes]] = []

    def background(script: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", script.strip()],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process, log

    try:
        mock, mock_log = background(moved(mock_block), "mock")
        wait_until_ready(mock, f"http://127.0.0.1:{mock_port}/health", mock_log)
        # The serve block: the providers file (a here-document), then the gateway itself.
        *setup, serve_line = moved(serve_block).strip().splitlines()
        subprocess.run(["bash", "-ec", "\n".join(setup)], cwd=tmp_path, env=env, check=True)
        gateway, gateway_log = background(serve_line, "gateway")
        wait_until_ready(gateway, f"http://127.0.0.1:{gateway_port}/readyz", gateway_log)

        # The usage row is written a moment after the answer (a reader is slower than that):
        # the script asks for the activity again until it shows, then prints it once more.
        activity = moved(calls_block).strip().splitlines()[-1]
        counted = "import json, sys; sys.exit(json.load(sys.stdin)['totals']['requests'] < 1)"
        until_counted = f"""
for attempt in $(seq 1 150); do
  out=$({activity})
  echo "$out" | python -c "{counted}" && break
  sleep 0.2
done
echo
echo "$out"
"""
        done = subprocess.run(
            ["bash", "-ec", moved(calls_block) + until_counted],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        # curl prints each answer without a newline: two JSON documents back to back.
        chat, _ = json.JSONDecoder().raw_decode(done.stdout.strip())
        last = json.loads(done.stdout.strip().splitlines()[-1])
        assert chat["choices"][0]["message"]["content"]
        assert chat["usage"]["total_tokens"] > 0
        assert last["totals"]["requests"] == 1, last
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
