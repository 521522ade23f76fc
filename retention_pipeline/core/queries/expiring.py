"""Which rows expire: the rules' predicates with the keep rule, the id spans batches walk, and counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    union_all,
)

from ..instants import older
from ..schema import alerts, detections, event_detections, events
from ..tables import Expiry, RetentionTable, column_of, table_of


def by_rules(expiry: Expiry, table: str) -> ColumnElement[bool]:
    """The row is before the cutoff of one of its table's rules (a NULL time column: that rule does not
    apply); without the keep rule."""
    entry = expiry.registry[table]
    terms = []
    for name, cutoff in expiry.rules_of(table):
        column = column_of(entry, name)
        # A built-in time column is NOT NULL. A declared one may hold NULL, which must read as "not
        # expired" (false), not unknown: NOT (unknown) is unknown too, and would hide a retained event.
        nullable = name not in {r.column for r in entry.rules if r.origin == "built-in"}
        terms.append(and_(column.is_not(None), older(column, cutoff)) if nullable else older(column, cutoff))
    # No rule (an expiry without cutoffs, built only to look at a statement's shape): nothing expires.
    return or_(false(), *terms)


def _linked_to(events_where: ColumnElement[bool]) -> ColumnElement[bool]:
    """The detection is linked to an event matching `events_where`."""
    # OFFSET 0 keeps PostgreSQL from turning a NOT EXISTS into a merge anti-join, which walks the
    # link index from its start on every batch (quadratic over a run); as a correlated sub-plan it is
    # one index look-up per detection of the batch.
    # The event is tested through a scalar sub-query, one primary-key look-up per link: as a join,
    # PostgreSQL sometimes read every old event through the time index once per link (quadratic).
    event_matches = select(events_where).where(events.c.id == event_detections.c.event_id).scalar_subquery()
    linked_to = (
        select(event_detections.c.event_id)
        .where(event_detections.c.detection_id == detections.c.id, event_matches)
        .offset(0)
    )
    return exists(linked_to)


def detection_may_expire(expiry: Expiry) -> ColumnElement[bool]:
    """Old or linked to an expired event: expired unless also linked to a retained event."""
    return or_(by_rules(expiry, "detections"), _linked_to(by_rules(expiry, "events")))


def detection_expired(expiry: Expiry) -> ColumnElement[bool]:
    """Old or linked to an expired event, and not linked to any retained event."""
    return and_(detection_may_expire(expiry), not_(_linked_to(not_(by_rules(expiry, "events")))))


def expired(expiry: Expiry, table: str) -> ColumnElement[bool]:
    """The row of `table` goes in a run with this expiry: its rules, and for detections the keep rule."""
    return detection_expired(expiry) if table == "detections" else by_rules(expiry, table)


def goes_with_parent(expiry: Expiry, table: str) -> ColumnElement[bool] | None:
    """The row references a parent row that goes in this run, whose ON DELETE CASCADE takes the row with
    it (None: the table has no such parent)."""
    entry = expiry.registry[table]
    terms = []
    for parent_name, column_name in entry.cascades_from:
        parent = table_of(expiry.registry[parent_name])
        reference = column_of(entry, column_name, BigInteger())
        # EXISTS, never IN: a NULL reference must read as false, also under NOT.
        terms.append(exists(select(parent.c.id).where(parent.c.id == reference, goes(expiry, parent_name))))
    return or_(*terms) if terms else None


def and_what_cascades(
    expiry: Expiry, entry: RetentionTable, rows: ColumnElement[bool]
) -> list[tuple[RetentionTable, ColumnElement[bool]]]:
    """`rows` of `entry`, and the rows of retention tables that ON DELETE CASCADE takes with them, at any
    depth (the chains `with_cascades` recorded): (table, its rows) each."""
    taken = [(entry, rows)]
    ids = select(table_of(entry).c.id).where(rows).scalar_subquery()
    for child in expiry.registry.tables:
        for parent, column in child.cascades_from:
            if parent == entry.name:
                taken += and_what_cascades(expiry, child, column_of(child, column, BigInteger()).in_(ids))
    return taken


def goes(expiry: Expiry, table: str) -> ColumnElement[bool]:
    """The row is gone after a run with this expiry: expired, or taken by an expired parent's cascade."""
    with_parent = goes_with_parent(expiry, table)
    return expired(expiry, table) if with_parent is None else or_(expired(expiry, table), with_parent)


def count_linked_to_a_retained_event(
    expiry: Expiry, rows: ColumnElement[bool], source: Table | None = None
) -> Select[Any]:
    """How many of the detections `rows` (of `source`: `detections` unless given, or one of its detached
    partitions) a retained event links (the keep rule protects them); one statement for a whole partition."""
    source = detections if source is None else source
    retained = select(events.c.id).where(not_(by_rules(expiry, "events")))
    links = select(event_detections.c.detection_id).where(event_detections.c.event_id.in_(retained))
    # A count, not EXISTS: expecting an early match, PostgreSQL answered EXISTS with a nested loop probing
    # every partition of `events` once per detection; a count it plans as one hash join.
    return select(func.count()).select_from(source).where(rows, source.c.id.in_(links))


def select_expired_detection_id_span(expiry: Expiry) -> Select[Any]:
    """The lowest and highest id a detection expired at this cutoff can have (None, None: none expired).

    Found through the time indexes, so a run with nothing expired reads almost nothing, and batches
    never scan the retained rows past the last expired one.
    """
    linked = (
        select(event_detections.c.detection_id.label("id"))
        .join(events, events.c.id == event_detections.c.event_id)
        .where(by_rules(expiry, "events"))
    )
    candidates = union_all(select(detections.c.id).where(by_rules(expiry, "detections")), linked)
    every = candidates.subquery()
    return select(func.min(every.c.id), func.max(every.c.id))


def select_expired_id_span(expiry: Expiry, table: str) -> Select[Any]:
    """The lowest and highest id among a table's rows expired by its rules (None, None: none)."""
    target = table_of(expiry.registry[table])
    return select(func.min(target.c.id), func.max(target.c.id)).where(by_rules(expiry, table))


def count_expired(expiry: Expiry, table: str) -> Select[Any]:
    """How many rows of a table a run with this expiry deletes in its own batches (rows a CASCADE takes
    with an expired parent go in the parent's, uncounted, as for every CASCADE child)."""
    target = table_of(expiry.registry[table])
    statement = select(func.count()).select_from(target).where(expired(expiry, table))
    with_parent = goes_with_parent(expiry, table)
    return statement if with_parent is None else statement.where(not_(with_parent))


def count_alerts_of_expired_events(expiry: Expiry) -> Select[Any]:
    """How many alerts go with the expired events."""
    gone = select(events.c.id).where(by_rules(expiry, "events"))
    return select(func.count()).select_from(alerts).where(alerts.c.event_id.in_(gone.scalar_subquery()))
