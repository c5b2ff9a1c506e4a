"""The detail pane: the finding, then its row as chat turns, or side by side with the
related row (near duplicate, conflicting answer, leaked eval row) with words highlighted."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher, Static

from curate.text.diff import CompareMode, compare_messages
from curate.engine.findings import Finding
from curate.rules.evaluation import candidate_outputs
from curate.tui.session import ReviewSession
from curate.tui.widgets.conversation import ConversationView, messages_of

HIGHLIGHTS = {CompareMode.DIFF: "bold black on yellow", CompareMode.OVERLAP: "bold white on dark_red"}
LEGENDS = {CompareMode.DIFF: "differences marked", CompareMode.OVERLAP: "shared runs marked"}


class DetailPane(Vertical):
    """Shows one finding; the screen calls `show(finding)`."""

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-header")
        with ContentSwitcher(initial="single", id="detail-switcher"):
            yield ConversationView(id="single")
            with Horizontal(id="compare"):
                yield ConversationView(id="compare-left", classes="compare-side")
                yield ConversationView(id="compare-right", classes="compare-side")

    def show(self, session: ReviewSession, finding: Finding | None) -> None:
        header = self.query_one("#detail-header", Static)
        switcher = self.query_one(ContentSwitcher)
        if finding is None:
            header.update(Text("No finding selected.", style="dim"))
            self.query_one("#single", ConversationView).show(None)
            switcher.current = "single"
            return
        header.update(finding_header(session, finding))
        row = session.row_of(finding)
        obj = session.current_row_object(finding.line) if row is not None else None
        outputs = candidate_outputs(obj) if finding.code == "EV001" else None
        if outputs and row is not None:
            self.show_candidates(obj, row, outputs)
            switcher.current = "compare"
            return
        counterpart = session.counterpart(finding)
        if counterpart is None or counterpart.row is None or not counterpart.row.ok or row is None:
            self.query_one("#single", ConversationView).show(obj, row)
            switcher.current = "single"
            return
        left_messages, right_messages = messages_of(obj), messages_of(counterpart.row.obj)
        left_spans = right_spans = None
        if left_messages is not None and right_messages is not None:
            left, right = compare_messages([m.content for m in left_messages], [m.content for m in right_messages], counterpart.mode)
            left_spans, right_spans = left.spans, right.spans
        highlight = HIGHLIGHTS[counterpart.mode]
        left_view = self.query_one("#compare-left", ConversationView)
        right_view = self.query_one("#compare-right", ConversationView)
        left_view.border_title = f"line {finding.line} (this row)"
        where = f"line {counterpart.location.line}" if counterpart.location.path == finding.path else f"{Path(counterpart.location.path).name}:{counterpart.location.line}"
        right_view.border_title = f"{where} · {LEGENDS[counterpart.mode]}"
        left_view.show(obj, row, left_spans, highlight)
        right_view.show(counterpart.row.obj, counterpart.row, right_spans, highlight)
        switcher.current = "compare"


    def show_candidates(self, obj, row, outputs: list[tuple[str, str, bool | None]]) -> None:
        """A `curate eval` failure: prompt and reference on the left, each candidate's answer on
        the right, with the words that differ from the reference marked."""
        messages = messages_of(obj) or []
        reference = messages[-1].content if messages and messages[-1].role == "assistant" else ""
        spans = [compare_messages([reference], [text], CompareMode.DIFF)[1].spans[0] for _, text, _ in outputs]
        left_view = self.query_one("#compare-left", ConversationView)
        right_view = self.query_one("#compare-right", ConversationView)
        left_view.border_title = "prompt and reference"
        right_view.border_title = f"candidates · {LEGENDS[CompareMode.DIFF]} from the reference"
        left_view.show(obj, row)
        answers = {"messages": [{"role": "assistant", "content": text} for _, text, _ in outputs]}
        titles = [f"{name} · {'passes' if passed else 'FAILS' if passed is False else 'not checked'}" for name, _, passed in outputs]
        right_view.show(answers, None, spans, HIGHLIGHTS[CompareMode.DIFF], titles)


def finding_header(session: ReviewSession, finding: Finding) -> Text:
    where = f"line {finding.line}" if finding.line is not None else "dataset"
    text = Text.assemble((f"{finding.code} {finding.name}", "bold"), f"  {where}  ", finding.message)
    status = session.status_of(finding)
    if status:
        text.append(f"  [{status}]", style="italic magenta")
    others = [f.code for f in session.findings_on(finding.line) if f is not finding]
    if others:
        text.append(f"\nalso on this row: {', '.join(sorted(set(others)))}", style="dim")
    return text
