"""Progress and summaries: a bar on a terminal, plain periodic lines otherwise (CI, Make logs).

Log lines go to stderr so that stdout carries only results (the summary table, `--print-config`).
`MLMCTL_LOG_EVERY` sets the seconds between plain progress lines (default 10).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def log(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)


class Progress:
    """`with Progress(total, "clean", "files") as p: p.update(1, loss=...)`."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, enabled: bool = True):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.n = 0
        self.start = time.monotonic()
        self.every = float(os.environ.get("MLMCTL_LOG_EVERY", "10"))
        self.last = self.start
        self.postfix: dict[str, Any] = {}
        self.bar = None
        if enabled and is_tty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if not self.enabled:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log(self.desc, self._line(now))

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k} {_fmt(v)}" for k, v in self.postfix.items())
        return f"{done} {self.unit}{pct}, {self.n / elapsed:.3g} {self.unit}/s{extra}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.n and time.monotonic() - self.start >= self.every:
            log(self.desc, self._line(time.monotonic()))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True) -> Progress:
    return Progress(total, desc, unit, enabled=enabled)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def print_summary(title: str, rows: dict[str, Any] | list[tuple[str, Any]]) -> None:
    """A two-column table of a stage's results on stdout."""
    from rich.console import Console
    from rich.table import Table

    items = rows.items() if isinstance(rows, dict) else rows
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in items:
        table.add_row(str(key), _fmt(value))
    Console(file=sys.stdout, soft_wrap=True).print(table)
