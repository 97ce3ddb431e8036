"""The depth book's row operations (pure)."""

from __future__ import annotations

import random
from decimal import Decimal

from tws_simulator.depth import DELETE, INSERT, UPDATE, Level, apply_side, diff_side


def side(*prices: float, size: int = 100) -> list[Level]:
    return [Level(p, Decimal(size)) for p in prices]


def replay(old: list[Level], new: list[Level]) -> list[Level]:
    rows = list(old)
    for op, pos, level in diff_side(old, new):
        apply_side(rows, op, pos, level)
    return rows


def test_rows_are_rewritten_in_place_and_grow_or_shrink_at_the_end() -> None:
    old = side(10.00, 9.99, 9.98)
    new = side(10.01, 10.00, 9.99)
    assert [(op, pos) for op, pos, _ in diff_side(old, new)] == [
        (UPDATE, 0),
        (UPDATE, 1),
        (UPDATE, 2),
    ]
    assert replay(old, new) == new
    assert [(op, pos) for op, pos, _ in diff_side(old, side(10.0))] == [(DELETE, 2), (DELETE, 1)]
    assert [(op, pos) for op, pos, _ in diff_side([], side(1.0, 0.9))] == [(INSERT, 0), (INSERT, 1)]


def test_overwrite_reading_gives_the_same_book() -> None:
    """ib_async keeps a book as {position: level} (insert = overwrite, delete = pop)."""
    old = side(10.00, 9.99, 9.98, 9.97)
    for new in (side(10.01, 10.00), side(9.99, 9.98, 9.97, 9.96, 9.95), side()):
        rows = dict(enumerate(old))
        for op, pos, level in diff_side(old, new):
            if op == DELETE:
                rows.pop(pos, None)
            else:
                rows[pos] = level
        assert [rows[k] for k in sorted(rows)] == new


def test_size_change_is_an_update() -> None:
    old = side(10.00, 9.99)
    new = [Level(10.00, Decimal(300)), Level(9.99, Decimal(100))]
    assert [(op, pos) for op, pos, _ in diff_side(old, new)] == [(UPDATE, 0)]


def test_random_books_replay_exactly_and_never_grow_past_both() -> None:
    rng = random.Random(7)
    for _ in range(500):
        old = side(*sorted(rng.sample(range(100), rng.randint(0, 10)), reverse=True))
        new = [
            Level(lv.price, Decimal(rng.choice((100, 200))))
            for lv in side(*sorted(rng.sample(range(100), rng.randint(0, 10)), reverse=True))
        ]
        rows = list(old)
        for op, pos, level in diff_side(old, new):
            apply_side(rows, op, pos, level)
            assert len(rows) <= max(len(old), len(new))
        assert rows == new
