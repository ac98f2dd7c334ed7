"""Progress for long command-line work (Verilator builds, simulations, Yosys / nextpnr stages):
one line per step on stderr, a spinner and the elapsed time while it runs, a check mark and its
duration once done; drawn by `rich <https://rich.readthedocs.io>`_.

Off unless stderr is a terminal, and off whenever the caller says so (``--json``, ``--quiet``):
progress never mixes into machine-readable output or a log file.
"""

from __future__ import annotations

import sys

__all__ = ["Progress"]


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Step lines on stderr (module docstring); a no-op when disabled or not on a terminal.

    Call it as ``progress(stage)`` or ``progress(stage, detail)`` (the callback of
    :func:`tools.api.verify` and :func:`fpga.build.build`): a new ``stage`` ends the running
    step and starts a line for the next; ``detail`` shows after the stage name on the running
    line. :meth:`step` and :meth:`done` do the same explicitly; as a context manager the
    display ends on exit, the running step marked with a cross if an exception ends it.

    Parameters
    ----------
    enabled : bool
        ``False`` turns it off whatever the stream is.
    stream : file, optional
        Where to draw (default ``sys.stderr``); only a terminal gets any output.
    """

    def __init__(self, enabled: bool = True, *, stream=None):
        self._stream = sys.stderr if stream is None else stream
        self.enabled = bool(enabled) and _is_terminal(self._stream)
        self._display = None  # rich.progress.Progress while lines are drawn
        self._task = None
        self.stage: str | None = None

    def __call__(self, stage: str, detail: str | None = None) -> None:
        if stage != self.stage:
            self.step(stage)
        if detail is not None:
            self.update(detail)

    def step(self, label: str) -> None:
        """End the running step and start one named ``label``."""
        self._finish()
        self.stage = label
        if not self.enabled:
            return
        if self._display is None:
            from rich.console import Console
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            console = Console(file=self._stream, highlight=False)
            self._display = RichProgress(
                SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                TimeElapsedColumn(), console=console, transient=False, refresh_per_second=4)
            self._display.start()
        self._task = self._display.add_task(label, total=1)

    def update(self, detail: str) -> None:
        """Show ``detail`` after the running step's name."""
        if self._task is not None:
            self._display.update(self._task, description=f"{self.stage}: {detail}")

    def _finish(self) -> None:
        if self._task is not None:
            self._display.update(self._task, completed=1)
            self._task = None

    def done(self, failed: bool = False) -> None:
        """End the running step (marked with a cross when ``failed``) and the display
        (idempotent)."""
        failure = None
        if failed and self._task is not None:
            task = next(t for t in self._display.tasks if t.id == self._task)
            failure = (task.description, int(task.elapsed or 0))
            self._display.remove_task(self._task)
            self._task = None
        self._finish()
        self.stage = None
        if self._display is not None:
            console = self._display.console
            self._display.stop()
            self._display = None
            if failure is not None:
                label, seconds = failure
                console.print(f"[red]✗[/red] {label} [yellow]"
                              f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
                              "[/yellow]", highlight=False, markup=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.done(failed=exc_type is not None)
