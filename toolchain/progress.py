"""One progress style for every long command (data synth, train, eval, quantize, parity, bench, lm tune): what is
running, a bar, done/total in the task's unit, elapsed time and time left, on stderr.

Silent when stderr is not a terminal (logs, pipes, tests) and under ``--json`` (``quiet``): there the command's
own output is all there is. A silent bar still takes tasks and advances, so callers never branch on it."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


class _Count(ProgressColumn):
    """done/total and the task's unit (``unit=`` of add_task: utts, steps, samples...)."""

    def render(self, task) -> Text:
        total = "?" if task.total is None else f"{task.total:.0f}"
        return Text(f"{task.completed:.0f}/{total} {task.fields.get('unit', '')}".rstrip(), style="progress.download")


class _TimeLeft(TimeRemainingColumn):
    """Rich's estimate from the recent rate, or the task's own ``seconds_left`` field when it knows better
    (training under a minute budget ends on the clock, not on the step count)."""

    def render(self, task) -> Text:
        left = task.fields.get("seconds_left")
        if left is None or task.finished:
            return super().render(task)
        minutes, seconds = divmod(int(max(0.0, left)), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def progress_bar(quiet: bool = False, console: Console | None = None, transient: bool = True) -> Progress:
    """A rich Progress on ``console`` (default: stderr). Give it the console the command logs to, so log lines
    print above the bar instead of through it."""
    console = console or Console(stderr=True)
    isatty = getattr(console.file, "isatty", None)
    # a real terminal, not rich's FORCE_COLOR/TTY_COMPATIBLE guess: colour in a CI log is fine, a bar is not
    on_terminal = bool(isatty and isatty())
    return Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), _Count(),
                    TimeElapsedColumn(), _TimeLeft(), console=console, transient=transient,
                    disable=quiet or not on_terminal,
                    redirect_stdout=False,  # the bar is on stderr; stdout (results, JSON) stays untouched
                    speed_estimate_period=300.0)  # slow units (a bench length, a parity cell) keep an estimate
