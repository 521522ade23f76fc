"""Starting `retention-pipeline` as a separate process, watching its progress, and killing it.

Two ways to start it:

- `exec`: `python -m retention_pipeline.cli ...`, exactly as a user or cron does;
- `fork`: a process forked from a server that has already imported the CLI, Dagster and the job, which then
  calls `retention_pipeline.cli.main` with the same arguments, environment and working directory. It is a
  real, separate process that can be SIGKILLed like the other; it only skips the ~3-5 s of imports, which
  lets the suite afford many kill points on two cores.

Its stdout and stderr go to files, so the test can poll the log for a progress line and kill the process
right after it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld

PROJECT = Path(__file__).resolve().parents[2]
PRELOAD = ["retention_pipeline.cli", "retention_pipeline.definitions", "retention_pipeline.history"]
_forkserver: Any = None


def process_context() -> Any:
    """A multiprocessing context whose processes fork from a server that has the product imported."""
    global _forkserver
    if _forkserver is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, *PRELOAD])
        _forkserver = context
    return _forkserver


def _cli_child(argv: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str) -> None:
    """Runs in the forked process: the CLI's main, with its own stdio, environment and directory."""
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    from retention_pipeline.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class CliProcess:
    """One running `retention-pipeline` command."""

    pid: int
    stdout_path: Path
    stderr_path: Path
    _popen: subprocess.Popen[bytes] | None = None
    _process: Any = None
    _log_offset: int = 0
    _log: str = ""

    def log(self) -> str:
        """Everything written to stderr so far, in whole lines."""
        with open(self.stderr_path, "rb") as handle:
            handle.seek(self._log_offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a partial line is read again next time
        self._log_offset += len(complete)
        self._log += complete.decode("utf-8", errors="replace")
        return self._log

    def running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return bool(self._process.is_alive())

    def wait_for_line(self, pattern: str, occurrence: int = 1, timeout: float = 120) -> bool:
        """Wait until `pattern` has appeared `occurrence` times in the log; False if the process ended."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.running()
            if len(regex.findall(self.log())) >= occurrence:
                return True
            if not alive:
                return False
            time.sleep(0.002)
        raise TimeoutError(f"{pattern!r} x{occurrence} not seen in {timeout}s:\n{self.log()[-3000:]}")

    def wait_for_vanished(self, paths: list[str], timeout: float = 120) -> bool:
        """Wait until one of `paths` is gone from disk; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.running()
            if not all(os.path.lexists(path) for path in paths):
                return True
            if not alive:
                return False
            time.sleep(0.001)
        raise TimeoutError(f"none of {len(paths)} files vanished in {timeout}s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 180) -> int:
        """The exit code (negative signal number when killed); reaps the process."""
        if self._popen is not None:
            return self._popen.wait(timeout)
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise TimeoutError(f"retention-pipeline (pid {self.pid}) still running after {timeout}s")
        return int(self._process.exitcode)

    def stdout(self) -> str:
        return self.stdout_path.read_text()


class Cli:
    """Runs `retention-pipeline` commands against one world, one Dagster home and one working directory."""

    def __init__(self, world: CameraWorld, home: Path, workdir: Path, **env: str) -> None:
        self.world = world
        self.home = home
        self.workdir = workdir
        self.env = env
        self._count = 0
        home.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            # As `make instance` does: the project's instance configuration (run queue, no telemetry).
            (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())

    def environment(self) -> dict[str, str]:
        pythonpath = os.pathsep.join(p for p in (str(PROJECT), os.environ.get("PYTHONPATH")) if p)
        return {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "DATABASE_URL": self.world.engine.url.render_as_string(hide_password=False),
            "MEDIA_ROOT": str(self.world.media),
            "THUMBNAIL_DIR": THUMBS,
            "CLIPS_DIR": CLIPS,
            "IMAGES_DIR": IMAGES,
            "DAGSTER_HOME": str(self.home),
            # Every batch logs a line: the kill points are aimed at them.
            "PROGRESS_INTERVAL_SECONDS": "0",
            **self.env,
        }

    def start(self, *argv: str, how: str = "fork") -> CliProcess:
        """Start one command; `how` is "fork" (from the preloaded server) or "exec" (a new interpreter)."""
        self._count += 1
        stdout = self.workdir / f"cli-{self._count}.out"
        stderr = self.workdir / f"cli-{self._count}.err"
        env = self.environment()
        if how == "exec":
            with open(stdout, "wb") as out, open(stderr, "wb") as err:
                popen = subprocess.Popen(
                    [sys.executable, "-m", "retention_pipeline.cli", *argv],
                    env=env,
                    cwd=self.workdir,
                    stdout=out,
                    stderr=err,
                )
            return CliProcess(popen.pid, stdout, stderr, _popen=popen)
        stderr.touch()
        process = process_context().Process(
            target=_cli_child, args=(list(argv), env, str(self.workdir), str(stdout), str(stderr))
        )
        process.start()
        assert process.pid is not None
        return CliProcess(process.pid, stdout, stderr, _process=process)
