"""The `curate review` Textual app and its factory (used by the CLI and the tests)."""

from __future__ import annotations

from textual.app import App

from curate.engine.settings import LintPlan
from curate.tui.screens.review import ReviewScreen
from curate.tui.session import ReviewSession


class ReviewApp(App[None]):
    """Review the findings of one data file; decisions go to a journal as they are made."""

    CSS_PATH = "app.tcss"
    TITLE = "curate review"

    def __init__(self, session: ReviewSession) -> None:
        super().__init__()
        self.session = session
        self.sub_title = session.data_name

    def on_mount(self) -> None:
        self.push_screen(ReviewScreen(self.session))

    async def action_quit(self) -> None:
        """ctrl+q goes through the same unsaved-changes question as q."""
        screen = self.screen
        if isinstance(screen, ReviewScreen):
            screen.action_quit_review()
        else:
            self.exit()

    def on_unmount(self) -> None:
        self.session.close()


def build_app(path: str, plan: LintPlan, output: str | None = None) -> ReviewApp:
    """A review app for one data file, linted with `plan` when it starts."""
    return ReviewApp(ReviewSession(path, plan, output))
