"""The eval closes the loop: the failures of generations.jsonl open in `curate review`, with the
prompt and reference beside each candidate's answer."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")

from textual.widgets import ContentSwitcher, Static  # noqa: E402

from curate.engine.settings import LintRequest, plan_lint  # noqa: E402
from curate.evaluate.candidates import Candidate  # noqa: E402
from curate.evaluate.generation import Generation, GenerationRun  # noqa: E402
from curate.evaluate.items import EvalItem  # noqa: E402
from curate.evaluate.metrics import score, task_profile  # noqa: E402
from curate.evaluate.pipeline import generation_row  # noqa: E402
from curate.tui.app import build_app  # noqa: E402
from curate.tui.screens.review import ReviewScreen  # noqa: E402
from curate.tui.widgets.findings_table import FindingsTable  # noqa: E402
from tests.conftest import lint_rows, write_jsonl  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def generations_rows() -> list[dict]:
    items = [EvalItem("heldout.jsonl", 4, [{"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many in all?"}], "48 / 2 = 24, 48 + 24 = 72.\n#### 72"),
             EvalItem("heldout.jsonl", 9, [{"role": "user", "content": "What is 3 + 4?"}], "#### 7")]
    candidates = [Candidate("base", "base", "m"), Candidate("adapter", "adapter", "m", adapter="run")]
    outputs = {"base": ["She sold 72 clips.", "3 + 4 = 7"], "adapter": ["She sold 96 clips.", "#### 7"]}
    runs = {name: GenerationRun([Generation(text, 20, 5, True) for text in texts], 1.0) for name, texts in outputs.items()}
    profile = task_profile([item.reference for item in items])
    verdicts = {name: score(profile, items, runs[name].outputs) for name in outputs}
    return [generation_row(item, candidates, runs, verdicts, index, "eval", None) for index, item in enumerate(items)]


def test_lint_of_a_generations_file_reports_each_failure(tmp_path):
    result = lint_rows(tmp_path, generations_rows(), select=["EV001"])
    assert [(f.line, f.message) for f in result.findings] == [(1, "eval prompt: adapter fails exact_match (passes with base)")]


async def test_review_shows_reference_and_candidates_side_by_side(tmp_path):
    path = write_jsonl(tmp_path / "generations.jsonl", generations_rows())
    app = build_app(str(path), plan_lint(LintRequest(paths=[str(path)], isolated=True, select=["EV001"])))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ReviewScreen)
        table = screen.query_one(FindingsTable)
        assert [f.code for f in app.session.visible] == ["EV001"]
        table.move_cursor(row=0)
        await pilot.pause(ReviewScreen.DETAIL_DELAY * 3)
        await pilot.pause()
        assert screen.query_one("#detail-switcher", ContentSwitcher).current == "compare"
        left = [w for w in screen.query_one("#compare-left").query_children(Static)]
        right = [w for w in screen.query_one("#compare-right").query_children(Static)]
        assert "#### 72" in str(left[-1].content)
        assert [w.border_title for w in right] == ["base · passes", "adapter · FAILS"]
        assert [str(w.content) for w in right] == ["She sold 72 clips.", "She sold 96 clips."]
