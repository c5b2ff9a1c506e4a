"""How `curate review` looks, at a fixed terminal size (pytest-textual-snapshot).

Regenerate after an intended change with
`pytest tests/test_review_snapshots.py --snapshot-update` and look at the SVGs.
Only file names appear on screen (never tmp paths), so the snapshots are stable.
"""

from __future__ import annotations

import pytest


from tests.test_review_app import REVIEW_ROWS, make_app  # noqa: E402
from tests.conftest import write_jsonl  # noqa: E402

SIZE = (120, 40)


@pytest.fixture
def app(tmp_path):
    return make_app(write_jsonl(tmp_path / "data.jsonl", REVIEW_ROWS))


async def wait_for_lint(pilot) -> None:
    from curate.tui.screens.review import ReviewScreen

    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause(ReviewScreen.DETAIL_DELAY * 3)
    await pilot.pause()


def test_main_screen(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=wait_for_lint)


def test_side_by_side_compare(app, snap_compare):
    async def open_duplicate(pilot) -> None:
        await wait_for_lint(pilot)
        await pilot.press("n")  # line 2 (SC001) -> line 4 (DU001, the copy of line 1)
        await pilot.pause(0.2)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=open_duplicate)


def test_help_screen(app, snap_compare):
    async def open_help(pilot) -> None:
        await wait_for_lint(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=open_help)
