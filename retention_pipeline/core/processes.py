"""Whether the process a run recorded is still the one running: a pid alone is not enough, since pids are
reused (after a reboot or a container restart the dead run's pid may well belong to another process)."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def start_identity(pid: int, proc: Path = PROC) -> str | None:
    """`<boot id>:<start time>` of a live process (Linux), None where /proc cannot tell (no such
    process, or no /proc). The start time counts clock ticks since boot, so the boot id goes with it."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last one.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    try:
        boot = (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{boot}:{fields[19]}"  # field 22 of stat, the 20th after the name


def pid_namespace(proc: Path = PROC) -> str | None:
    """This process's pid namespace (`pid:[inode]`, Linux), None where /proc cannot tell. A pid means a
    process only in the namespace it was read in: containers sharing a host name (host networking, a pod's
    containers) each number their own processes, so the host name does not tell them apart."""
    try:
        return os.readlink(proc / "self" / "ns" / "pid")
    except OSError:
        return None


def still_running(pid: int, identity: str | None, proc: Path = PROC) -> bool:
    """Whether `pid` is alive and, if its start identity was recorded and can be read now, still the same
    process. Without /proc (or with no identity recorded) the pid's existence is all there is to go by."""
    if pid <= 0:  # kill(0) and kill(-n) signal process groups, which says nothing of this run
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and maybe the recorded one
        pass
    if identity is None:
        return True
    now = start_identity(pid, proc)
    return now is None or now == identity
