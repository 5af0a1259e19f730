"""What a run shows and records while it trains: a rich progress bar, plain log lines when there
is no terminal, ``metrics.jsonl`` and (optionally) TensorBoard."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kp3d.engine.atomic import atomic_write_text
from kp3d.errors import ConfigError

log = logging.getLogger("kp3d.engine")

CONSOLE = Console(stderr=True)
"""The console of kp3d's progress bars; log handlers that print while a bar is shown use it."""

_PROGRESS_RESOLUTION = 1000
_PLAIN_LOG_INTERVAL_S = 10.0


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` or ``events.jsonl``; a line torn by a kill is ignored."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """An append-only JSON-lines file (``metrics.jsonl``, ``events.jsonl``), flushed per row.

    On resume the file is first cut back to the rows at or before the checkpoint's step (rows
    written after it are redone by the resumed run, so the file reads like one uninterrupted run)
    and a torn last line is dropped; this rewrite is atomic.
    """

    def __init__(self, path: Path, *, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is None:
            atomic_write_text(path, "")
        else:
            rows = [r for r in read_metrics(path) if r.get("step", 0) <= keep_until_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoard:
    """Scalars to ``RUN/tensorboard`` with ``torch.utils.tensorboard`` (needs ``tensorboard``)."""

    def __init__(self, folder: Path) -> None:
        self.check_available()
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(folder))

    @staticmethod
    def check_available() -> None:
        """Raises :class:`ConfigError` when the tensorboard package is missing."""
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "tensorboard: the tensorboard package is not installed (pip install tensorboard), "
                "or leave --tensorboard off; metrics.jsonl is always written"
            ) from None

    def write(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


class ProgressDisplay:
    """A rich progress bar (in a terminal) or a plain log line every few seconds (otherwise).

    Progress is the larger of the step and time fractions of the budget, so a bar fills up for
    ``steps``, ``minutes`` or both.
    """

    def __init__(
        self,
        *,
        steps: int | None,
        minutes: float | None,
        enabled: bool | None = None,
        show: bool = True,
    ) -> None:
        """``enabled``: the bar (default: when stderr is a terminal); ``show=False``: nothing at
        all (ranks other than 0)."""
        self.steps, self.minutes, self.show = steps, minutes, show
        self.bar_enabled = show and (CONSOLE.is_terminal if enabled is None else enabled)
        self._bar: Progress | None = None
        self._last_plain = 0.0
        self._loss: float | None = None
        self._ips: float | None = None

    def __enter__(self) -> Self:
        if self.bar_enabled:
            self._bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=CONSOLE,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=_PROGRESS_RESOLUTION, status="starting")
        return self

    def _fraction(self, step: int, elapsed_s: float) -> float:
        fractions = [0.0]
        if self.steps:
            fractions.append(step / self.steps)
        if self.minutes:
            fractions.append(elapsed_s / (60 * self.minutes))
        return min(max(fractions), 1.0)

    def update(
        self,
        step: int,
        elapsed_s: float,
        *,
        loss: float | None,
        images_per_s: float | None,
        force: bool = False,
    ) -> None:
        """Show ``step``; ``loss`` / ``images_per_s`` of None keep the last values shown."""
        self._loss = loss if loss is not None else self._loss
        self._ips = images_per_s if images_per_s is not None else self._ips
        loss, images_per_s = self._loss, self._ips
        total = f"/{self.steps}" if self.steps else ""
        loss_s = f"loss {loss:.4g}" if loss is not None else "loss -"
        ips = f"{images_per_s:.0f} img/s" if images_per_s else "- img/s"
        status = f"step {step}{total}  {loss_s}  {ips}"
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=self._fraction(step, elapsed_s) * _PROGRESS_RESOLUTION,
                status=status,
            )
        elif self.show:
            now = time.monotonic()
            if force or now - self._last_plain >= _PLAIN_LOG_INTERVAL_S:
                self._last_plain = now
                budget = f" of {self.minutes:g} min" if self.minutes else ""
                log.info("%s  %.0f s%s", status, elapsed_s, budget)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
