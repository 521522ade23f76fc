"""Emergency mode's verdict on each pass for each volume under the target, and when to give up."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# Passes in a row that deleted files on a volume under the target without freeing any room there.
FRUITLESS_PASSES = 2
# Passes in a row that handled files on a volume under the target (deleted rows naming them) yet deleted
# not one of them.
BARREN_PASSES = 3


@dataclass
class Verdicts:
    """Per volume, the fruitless and barren passes in a row so far (passes that handled no file there
    are skipped: they say nothing of it), and the volumes whose last pass handled no file there while no
    row left names one (idle: no shorter retention can free anything there)."""

    fruitless: dict[str, int] = field(default_factory=dict)
    barren: dict[str, int] = field(default_factory=dict)
    idle: set[str] = field(default_factory=set)
    # Volumes a row was found naming a file of since the last pass that handled one there: asked once,
    # not at every pass (without path indexes the question may read a whole table).
    named: set[str] = field(default_factory=set)

    def judge(
        self,
        pressed: Iterable[str],
        deleted: dict[str, Any],
        before: dict[str, float],
        free: dict[str, float],
        names_files: Callable[[str], bool | None] = lambda volume: True,
    ) -> None:
        """Count one pass on the volumes that were under the target when it began.

        Only files count: rows free no disk space (neither engine shrinks its files), and a file handled
        on a roomy volume says nothing of the full one. `deleted["volumes"]`: the volumes where the pass
        deleted a file; `deleted["unfreed_on"]`: those where a file it handled stayed (missing, refused,
        failed, shared, queued under an offline root). `names_files(volume)`: whether a row of the tables the
        emergency shortens still names a file of that volume's kinds, asked only after a pass that handled
        none there; None when it could not tell (a lock held the tables), taken as "yes" for this pass
        and asked again after the next."""
        for volume in pressed:
            handled = volume in deleted.get("volumes", ()) or volume in deleted.get("unfreed_on", ())
            # A pass handling no file there says nothing of it while rows still name its files (they may
            # be younger than the cutoffs so far); with none left, no shorter retention frees anything.
            if handled:
                self.named.discard(volume)  # the rows that named its files may be the ones just deleted
                self.idle.discard(volume)
            elif volume in self.named:
                self.idle.discard(volume)
            elif (named := names_files(volume)) is False:
                self.idle.add(volume)
            else:
                if named:  # "could not tell" (None) is not kept: asked again after the next pass
                    self.named.add(volume)
                self.idle.discard(volume)
            if volume in deleted.get("volumes", ()):
                self.barren[volume] = 0
                if free[volume] > before[volume]:
                    self.fruitless[volume] = 0
                else:
                    # Twice in a row: once can be the camera writing as much as the pass freed.
                    self.fruitless[volume] = self.fruitless.get(volume, 0) + 1
            elif volume in deleted.get("unfreed_on", ()):
                # Leaves the fruitless count as it was: a pass that deleted nothing there cannot tell
                # whether deleting frees room there.
                self.barren[volume] = self.barren.get(volume, 0) + 1

    def is_fruitless(self, volume: str) -> bool:
        return self.fruitless.get(volume, 0) >= FRUITLESS_PASSES

    def is_barren(self, volume: str) -> bool:
        return self.barren.get(volume, 0) >= BARREN_PASSES

    def is_stuck(self, volume: str) -> bool:
        return self.is_fruitless(volume) or self.is_barren(volume) or volume in self.idle

    def give_up(
        self, pressed: list[str], days: int, files_deleted: int, described: str, target: float
    ) -> str | None:
        """Why the emergency stops, when every volume still under the target (`pressed`) is stuck; None
        while one of them may still gain room from a shorter retention."""
        if not pressed or not all(self.is_stuck(v) for v in pressed):
            return None
        fruitless = [volume for volume in pressed if self.is_fruitless(volume)]
        barren = [volume for volume in pressed if volume not in fruitless and self.is_barren(volume)]
        idle = [volume for volume in pressed if volume not in fruitless and volume not in barren]
        reasons = []
        if fruitless:
            reasons.append(
                f"the last {FRUITLESS_PASSES} passes deleting files on the volume of {_names(fruitless)}"
                " neither freed anything measurable there: what fills it is not data retention deletes"
            )
        if barren:
            reasons.append(
                f"the last {BARREN_PASSES} passes deleted rows whose files lie on the volume of"
                f" {_names(barren)} but not one of those files: they stayed queued (storage root"
                " unmounted?), were missing, refused, failed or shared"
            )
        if idle:
            reasons.append(
                f"no row left in the tables retention shortens names a file on the volume of {_names(idle)}:"
                " what fills it is not files data retention deletes"
            )
        return (
            f"cutting retention to {days} days deleted {files_deleted} files, and no volume still under the"
            f" {target}% target can gain room from a shorter retention ({described}): {'; '.join(reasons)}."
            " Stopped instead of cutting further; see the passes' file counts, mount the storage root or"
            " free space by other means."
        )


def _names(volumes: list[str]) -> str:
    return " and of ".join(volumes)
