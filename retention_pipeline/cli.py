"""`retention-pipeline`: build the demo, run data_cleanup against the Dagster instance, show its history."""

import argparse
import gc
import json
import logging
import sys
import traceback
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_BUSY = 3


def _say(message: str) -> None:
    # stdout is reserved for results (one JSON document with --json); everything else goes to stderr.
    print(message, file=sys.stderr)


def _failed(code: int, error: str, as_json: bool, run_id: str | None = None) -> int:
    """Report a command that did not succeed; with --json, stdout still carries its one document."""
    _say(error)
    if as_json:
        print(json.dumps({"ok": False, "exit_code": code, "error": error, "run_id": run_id}))
    return code


MAX_LIMIT = 1_000_000  # more runs than any history holds; far larger values overflow SQLite's integers


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return value


class UsageError(Exception):
    """A command line argparse refuses: reported as any failure, so --json still gets its one document."""

    def __init__(self, usage: str, message: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    # argparse would print its message and exit on its own, leaving stdout empty. The subcommands'
    # parsers are of this class too: add_subparsers makes them of the parent's.
    def error(self, message: str) -> NoReturn:
        raise UsageError(self.format_usage().rstrip(), f"{self.prog}: {message}")


def _wants_json(words: Sequence[str]) -> bool:
    """Whether a command line argparse refused asked for --json (argparse also takes `--j`, and a person
    may write `--json=yes`, which it refuses)."""
    return any(len(flag) > 2 and "--json".startswith(flag) for flag in (w.split("=", 1)[0] for w in words))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retention-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="(re)create the demo database and media under data/")
    demo.add_argument("--dir", type=Path, default=Path("."), help="where data/ goes (default: .)")
    run = commands.add_parser("run", help="run data_cleanup now and print its statistics")
    run.add_argument("--dry-run", action="store_true", help="preview only; change nothing")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    orphans = commands.add_parser("orphans", help="run orphaned_file_cleanup (a dry run unless --delete)")
    orphans.add_argument("--delete", action="store_true", help="delete the orphans found")
    orphans.add_argument("--include-images", action="store_true", help="also sweep IMAGES_DIR")
    orphans.add_argument("--force", action="store_true", help="delete even past the safety stops")
    orphans.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    doctor = commands.add_parser(
        "doctor", help="check the camera database and storage before a run (changes nothing)"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    status = commands.add_parser("status", help="show the latest data_cleanup runs")
    status.add_argument(
        "--json", action="store_true", help="print one JSON object: the policy, the schedule and the runs"
    )
    status.add_argument("--limit", type=_positive, default=10, help="how many runs (default 10)")
    return parser


def console() -> int:
    """The `retention-pipeline` command: main(), then an exit that does not walk the heap."""
    code = main()
    # Python's shutdown garbage-collects every object still alive, ~200k once Dagster is imported: 0.6 s
    # of a 2.8 s run with nothing to delete. By now every transaction is committed and the instance closed;
    # frozen objects are left to the OS (refcounted ones are still freed, atexit handlers still run).
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        _say(exc.usage)
        return _failed(EXIT_BAD_CONFIG, str(exc), _wants_json(sys.argv[1:] if argv is None else argv))
    # Dagster warns about beta parameters of its own sensor machinery each time the definitions load; the
    # CLI's output holds only what the user asked for.
    warnings.filterwarnings("ignore", message=r".*is currently in beta")
    # Without a dagster.yaml the instance keeps everything under DAGSTER_HOME, which is what the CLI wants;
    # Dagster's advice to create one is noise in a command's output.
    logging.getLogger("dagster").addFilter(
        lambda record: "No dagster instance configuration file" not in record.getMessage()
    )
    if args.command == "demo":
        return _demo(args.dir)
    # Dagster is imported only here so `demo` and `--help` stay fast.
    from .settings import Settings, SettingsError

    try:
        Settings.from_env()
    except SettingsError as exc:
        return _failed(EXIT_BAD_CONFIG, str(exc), getattr(args, "json", False))
    try:
        return _command(args)
    except SettingsError as exc:  # DAGSTER_HOME that cannot hold an instance
        return _failed(EXIT_BAD_CONFIG, str(exc), getattr(args, "json", False))
    except Exception as exc:  # unforeseen (a broken dagster.yaml): still one document
        _say(traceback.format_exc())
        return _failed(EXIT_FAILED, f"{type(exc).__name__}: {exc}", getattr(args, "json", False))


def _command(args: argparse.Namespace) -> int:
    if args.command == "run":
        config = {"dry_run": args.dry_run}
        return _run("data_cleanup", "plan_cleanup", config, "report_cleanup", as_json=args.json)
    if args.command == "doctor":
        return _doctor(as_json=args.json)
    if args.command == "orphans":
        config = {"dry_run": not args.delete, "include_images": args.include_images, "force": args.force}
        return _run("orphaned_file_cleanup", "plan_orphan_sweep", config, "report_orphan_sweep", args.json)
    return _status(limit=args.limit, as_json=args.json)


def _demo(base: Path) -> int:
    from .core.demo import build_demo, demo_environment

    summary = build_demo(base.absolute())
    print(
        f"demo: {summary.events} events, {summary.detections} detections and {summary.files} files"
        f" in {summary.database_url}"
    )
    print("point the pipeline at it with:")
    for name, value in demo_environment(base.absolute()).items():
        print(f"  export {name}={value}")
    return 0


def _open_instance() -> Any:
    import dagster as dg

    from .history import local_instance_home

    local_instance_home(_say)
    return dg.DagsterInstance.get()


def _run(job: str, first_op: str, config: dict[str, Any], report_op: str, as_json: bool) -> int:
    from .definitions import defs
    from .failed_runs import step_failure_reason
    from .run_processes import blocking_runs, process_tags
    from .tags import INVALID_CONFIG, RUN_LOCK_BUSY

    with _open_instance() as instance:
        if busy := blocking_runs(instance):
            return _failed(
                EXIT_BUSY,
                f"another retention run is in progress ({busy[0].run_id}, {busy[0].status.value});"
                " not starting a second one. Try again when it has finished.",
                as_json,
            )
        run_id = str(uuid.uuid4())  # as Dagster makes its run ids: known before the run exists
        result = defs.resolve_job_def(job).execute_in_process(
            run_config={
                "ops": {first_op: {"config": config}},
                # Progress at INFO on stderr; Dagster's step-by-step DEBUG events stay in the run log.
                "loggers": {"console": {"config": {"log_level": "INFO"}}},
            },
            instance=instance,
            raise_on_error=False,
            run_id=run_id,
            # Noted from its creation: killed before its first op notes it, it is not live forever.
            tags=process_tags(run_id),
        )
    if not result.success:
        markers: set[str] = set()
        failures = []
        for event in result.all_events:
            if event.is_step_failure:
                failures.append(step_failure_reason(str(event.step_key), event.step_failure_data))
                user_data = event.step_failure_data.user_failure_data
                markers.update(user_data.metadata if user_data else ())
        # The lock held by a run this instance does not know (another deployment, another DAGSTER_HOME).
        code = EXIT_BUSY if RUN_LOCK_BUSY in markers else EXIT_FAILED
        if INVALID_CONFIG in markers:  # a policy rule that can never apply, as doctor says too
            code = EXIT_BAD_CONFIG
        return _failed(code, "\n".join([*failures, f"run {result.run_id} failed"]), as_json, result.run_id)
    stats = result.output_for_node(report_op).as_dict()
    if as_json:
        print(json.dumps(stats))
    else:
        from .core.labels import readable

        title = "DRY RUN - nothing was deleted; what a real run would delete" if config["dry_run"] else job
        print(f"{title} (run {result.run_id})")
        shown = readable(stats, config["dry_run"])
        width = max(len(name) for name in shown)
        for name, value in shown.items():
            print(f"{name:<{width}}  {value}")
    return 0


def _doctor(as_json: bool) -> int:
    """Exit 0 when nothing blocks a run, 1 when something would make it fail."""
    from datetime import UTC, datetime

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from .core.db import make_engine
    from .core.doctor import diagnose
    from .core.doctor_text import render
    from .core.plan import make_plan
    from .settings import Settings, SettingsError

    settings = Settings.from_env()
    try:
        plan = make_plan(settings, dry_run=True, reference_time=datetime.now(UTC))
    except SettingsError as exc:  # a policy rule that can never apply
        return _failed(EXIT_BAD_CONFIG, str(exc), as_json)
    file = make_url(settings.database_url).database if settings.database_url.startswith("sqlite") else None
    if file not in (None, "", ":memory:") and not Path(str(file)).exists():
        message = f"cannot read the camera database: {file} does not exist. Check DATABASE_URL."
        return _failed(EXIT_FAILED, message, as_json)
    engine = make_engine(settings.database_url, read_only=True)  # doctor changes nothing, not even a pragma
    try:
        report = diagnose(engine, plan, settings.database_url)
    except SQLAlchemyError as exc:
        return _failed(EXIT_FAILED, f"cannot read the camera database: {exc}", as_json)
    finally:
        engine.dispose()
    print(json.dumps(report.as_dict()) if as_json else render(report))
    return 0 if report.ok else EXIT_FAILED


def _status(limit: int, as_json: bool) -> int:
    from .core.status_text import render
    from .history import cleanup_status
    from .settings import Settings

    with _open_instance() as instance:
        status = cleanup_status(instance, Settings.from_env(), limit)
    print(json.dumps(status) if as_json else render(status))
    return 0


if __name__ == "__main__":
    raise SystemExit(console())
