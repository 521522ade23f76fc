"""relieve_pressure's stopping rules, with scripted passes: what each deletes where, the free space left."""

from collections.abc import Callable
from typing import Any

import pytest

from retention_pipeline.core.pressure import PressureNotRelieved, relieve_pressure


class Script:
    """Passes at 29, 28, ... days: each deletes what `passes` says (volumes holding the files it deleted,
    the free space it leaves); past the script, every volume has room."""

    def __init__(
        self,
        free: dict[str, float],
        passes: list[tuple[dict[str, Any], dict[str, float]]],
        unnamed: tuple[str, ...] = (),
    ) -> None:
        """`unnamed`: volumes on which no row left names a file."""
        self.free, self.passes, self.days, self.unnamed = dict(free), passes, [], unnamed

    def clean_at(self, days: int) -> dict[str, Any]:
        self.days.append(days)
        step, free = self.passes.pop(0) if self.passes else ({}, dict.fromkeys(self.free, 50.0))
        self.free.update(free)
        return {"rows_deleted": 1, "files_deleted": 1, **step}

    def run(self, names_files: Callable[[str], bool | None] | None = None) -> int:
        """`names_files`: the answers to "does a row still name a file there" (default: by `unnamed`)."""
        result = relieve_pressure(
            self.clean_at,
            lambda: dict(self.free),
            lambda days: days - 0.5,
            30,
            1,
            15.0,
            lambda _m: None,
            names_files or (lambda volume: volume not in self.unnamed),
        )
        return result.final_days


def test_fruitless_steps_on_two_volumes_are_counted_apart():
    # One fruitless step on A, then one on B: neither volume had two in a row.
    script = Script({"A": 12.0, "B": 12.0}, [({"volumes": ["A"]}, {}), ({"volumes": ["B"]}, {})])

    assert script.run() == 27
    assert script.days == [29, 28, 27]


def test_a_step_that_freed_room_between_two_fruitless_ones_lets_the_run_go_on():
    script = Script(
        {"A": 10.0},
        [
            ({"volumes": ["A"]}, {}),  # the camera wrote as much as the pass freed
            ({"volumes": ["A"]}, {"A": 11.0}),
            ({"volumes": ["A"]}, {}),
        ],
    )

    assert script.run() == 26


def test_two_fruitless_steps_in_a_row_on_one_volume_stop_the_run():
    script = Script({"A": 10.0}, [({"volumes": ["A"]}, {}), ({"volumes": ["A"]}, {})])

    with pytest.raises(PressureNotRelieved, match="neither freed anything measurable"):
        script.run()
    assert script.days == [29, 28]


def barren(volume: str) -> tuple[dict[str, Any], dict[str, float]]:
    """A pass that handled files on `volume` (deleted rows naming them), and not one of them (they stayed)."""
    return {"files_deleted": 0, "volumes": [], "unfreed_on": [volume]}, {}


# A pass that handled no file on the full volume: rows only, or files of another volume.
NEUTRAL: tuple[dict[str, Any], dict[str, float]] = ({"files_deleted": 0, "volumes": [], "unfreed_on": []}, {})


def test_passes_that_delete_rows_but_none_of_their_files_on_the_full_volume_stop_the_run():
    script = Script({"A": 5.0}, [barren("A")] * 10)

    with pytest.raises(PressureNotRelieved, match="not one of those files") as stopped:
        script.run()
    assert script.days == [29, 28, 27]
    assert "storage root unmounted?" in str(stopped.value)


@pytest.mark.parametrize(
    "quiet",
    [
        # rows of tables storing no file (gpu_stats), or whose file columns were empty
        {"files_deleted": 0, "volumes": [], "unfreed_on": []},
        # files of another volume: deleted, or missing there
        {"files_deleted": 1, "volumes": ["B"], "unfreed_on": ["B"]},
        {"files_deleted": 0, "volumes": [], "unfreed_on": ["B"]},
    ],
)
def test_passes_that_delete_rows_naming_no_file_left_behind_there_never_stop_the_run(quiet: dict[str, Any]):
    script = Script({"A": 5.0, "B": 50.0}, [(quiet, {})] * 10)

    assert script.run() == 19  # the eleventh pass relieved the disk


@pytest.mark.parametrize("free_after", [{"A": 6.0}, {}], ids=["freed", "fruitless"])
def test_a_pass_that_deletes_files_there_starts_the_barren_count_again(free_after: dict[str, float]):
    deleting = ({"volumes": ["A"], "unfreed_on": ["A"]}, free_after)
    script = Script({"A": 5.0}, [barren("A"), barren("A"), deleting, barren("A"), barren("A")])

    assert script.run() == 24


def test_a_volume_nothing_relieves_does_not_stop_the_run_while_another_gains_room():
    # A gains room with every pass; B is filled by something else. B's fruitless passes must not leave A
    # under its target (the sensor would hold off while A fills).
    gaining = [({"volumes": ["A", "B"]}, {"A": 8.0 + n, "B": 8.0}) for n in range(1, 10)]
    script = Script({"A": 8.0, "B": 8.0}, gaining)

    with pytest.raises(PressureNotRelieved, match="neither freed anything measurable") as stopped:
        script.run()
    assert script.days == [29, 28, 27, 26, 25, 24, 23]  # A has 15% free: only B is left under the target
    assert script.free["A"] == 15.0
    assert "on the volume of B neither" in str(stopped.value)


def test_barren_passes_count_in_a_row_past_passes_that_handled_no_file_there():
    script = Script({"A": 5.0}, [barren("A"), NEUTRAL, barren("A"), NEUTRAL, barren("A")])

    with pytest.raises(PressureNotRelieved, match="not one of those files"):
        script.run()
    assert script.days == [29, 28, 27, 26, 25]


def test_the_run_stops_only_once_every_volume_under_the_target_is_stuck():
    # Every pass deletes files on A that free nothing, and handles files on B that all stay.
    both = ({"volumes": ["A"], "unfreed_on": ["B"]}, {})
    script = Script({"A": 10.0, "B": 10.0}, [both] * 5)

    with pytest.raises(PressureNotRelieved) as stopped:
        script.run()
    assert script.days == [29, 28, 27]  # A stuck after two passes, B after three
    message = str(stopped.value)
    assert "on the volume of A neither freed anything measurable" in message
    assert "files lie on the volume of B but not one of those files" in message


def test_a_volume_no_row_names_a_file_on_is_stuck_once_a_pass_handles_none_there():
    # A is filled by something else (its deleted files free nothing); B holds only files no row names.
    fruitless_on_a = ({"volumes": ["A"]}, {})
    script = Script({"A": 5.0, "B": 5.0}, [fruitless_on_a] * 10, unnamed=("B",))

    with pytest.raises(PressureNotRelieved) as stopped:
        script.run()
    assert script.days == [29, 28]  # before: on down to MIN_RETENTION_DAYS, 1
    assert "no row left in the tables retention shortens names a file on the volume of B" in str(
        stopped.value
    )


def test_a_volume_whose_files_rows_still_name_stays_pressed_through_passes_handling_none():
    script = Script({"A": 5.0}, [NEUTRAL] * 4)  # rows still name files on A, younger than the cutoffs

    assert script.run() == 25


def test_whether_rows_still_name_a_volumes_files_is_asked_once_until_a_pass_handles_files_there():
    asked: list[str] = []
    passes = [NEUTRAL] * 3 + [({"volumes": ["A"]}, {"A": 6.0})] + [NEUTRAL] * 2
    script = Script({"A": 5.0}, passes)

    def names_files(volume: str) -> bool:
        asked.append(volume)
        return True

    script.run(names_files)

    # Without path indexes each question may read a whole table: once for the three neutral passes, once
    # again after the pass that deleted files there (the rows naming them may be the ones it deleted).
    assert asked == ["A", "A"]


def test_a_question_that_got_no_answer_keeps_the_volume_pressed_for_that_pass_and_is_asked_again():
    # None: a lock held the tables past lock_timeout; neither "no" (stuck at once) nor a "yes" to keep.
    answers: list[bool | None] = [None, None, False]
    script = Script({"A": 5.0}, [NEUTRAL] * 10)

    with pytest.raises(PressureNotRelieved) as stopped:
        script.run(lambda volume: answers.pop(0))

    assert script.days == [29, 28, 27] and answers == []
    assert "no row left in the tables retention shortens names a file on the volume of A" in str(
        stopped.value
    )
