"""Progress, log lines and summaries, for a terminal and for machines (CI, Make, Slurm logs).

Log lines go to stderr so that stdout carries only results (the summary table, `--print-config`).

Off a terminal: every log line starts with a timestamp, progress is a plain line at most every
`MLMCTL_LOG_EVERY` seconds (default 10) with rate and ETA, and tables are Markdown-style text
(`| key | value |`) that never wraps and has no padding, whatever `COLUMNS` says.
On a terminal: a tqdm bar that keeps its bar readable at 80 columns; log lines are written above
the live bar (tqdm.write), never into it.

One throughput figure: `tokens_per_s(tokens, train_s)` = training tokens over training time
(validation and checkpoint writes excluded). The bar, metrics.jsonl, the summary and `report`
all show its value.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

# Keys of metrics.jsonl rows that depend on the clock, not on the computation (a resumed run
# writes every other key again identically).
TIMING_KEYS = ("time", "elapsed_s", "train_s", "tokens_per_s")

_bars: list = []  # live tqdm bars: log lines must go through tqdm.write while one is shown


def is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def log(stage: str, message: str) -> None:
    if is_tty():
        line = f"[{stage}] {message}"
        if _bars:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
            return
    else:
        line = f"{timestamp()} [{stage}] {message}"
    print(line.rstrip(), file=sys.stderr, flush=True)


def tokens_per_s(tokens: int, train_s: float) -> int:
    """The one tokens/s of a run: training tokens over training time, rounded to a whole token."""
    return round(tokens / train_s) if train_s > 0 else 0


def timed_row(row: dict, started: float) -> dict:
    """A metrics.jsonl row with wall-clock `time` (Unix seconds) and `elapsed_s` since `started`
    (a time.monotonic() value: the start of this command)."""
    return {**row, "time": round(time.time(), 3), "elapsed_s": round(time.monotonic() - started, 3)}


class Progress:
    """`with Progress(total, "clean", "files") as p: p.update(1, loss=...)`.

    `initial` is work already done (a resumed run): it counts towards the total but not the rate.
    A phase with nothing to do (total 0) shows nothing."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled and total != 0
        self.n = self.initial = initial
        self.start = time.monotonic()
        self.every = float(os.environ.get("MLMCTL_LOG_EVERY", "10"))
        self.last = self.start
        self.logged = initial  # the count of the last plain line: the final state is printed once
        self.postfix: dict[str, Any] = {}
        self.bar = None
        if self.enabled and is_tty():
            from tqdm import tqdm

            # The bar gets what the text leaves of the line; the text is kept short (ETA, no
            # rate: tokens/s or the like comes in the postfix) so that 80 columns leave ~20.
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                            initial=initial, leave=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}{postfix}]" if total else None)
            _bars.append(self.bar)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if not self.enabled:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(", ".join(f"{k} {_fmt(v)}" for k, v in self.postfix.items()), refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last, self.logged = now, self.n
            log(self.desc, self._line(now))

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {_duration((self.total - self.n) / rate)}"
        extra = "".join(f", {k} {_fmt(v)}" for k, v in self.postfix.items())
        return f"{done} {self.unit}{pct}, {rate:.3g} {self.unit}/s, elapsed {_duration(elapsed)}{eta}{extra}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # draws the final state once (leave=True)
            if self.bar in _bars:
                _bars.remove(self.bar)
            self.bar = None
        elif self.enabled and self.n > self.logged and time.monotonic() - self.start >= self.every:
            log(self.desc, self._line(time.monotonic()))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0) -> Progress:
    return Progress(total, desc, unit, enabled=enabled, initial=initial)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def print_summary(title: str, rows: dict[str, Any] | list[tuple[str, Any]]) -> None:
    """A two-column table of a stage's results on stdout."""
    items = rows.items() if isinstance(rows, dict) else rows
    print_table(title, None, [(str(k), _fmt(v)) for k, v in items])


def print_table(title: str, header: list[str] | None, rows: list[tuple]) -> None:
    """A table on stdout: aligned columns on a terminal; off it, Markdown-style rows
    (`| key | value |`), one per line, never wrapped, no padding, the same whatever COLUMNS is."""
    cells = [[_cell(c) for c in row] for row in rows]
    if not sys.stdout.isatty():
        lines = [title]
        if header:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        print("\n".join(lines), flush=True)
        return
    table = ([header] if header else []) + cells
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))] if table else []
    lines = [title]
    for j, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if header and j == 0:
            lines.append("  ".join("-" * w for w in widths))
    print("\n".join(lines), flush=True)


def _cell(value: Any) -> str:
    # A `|` or a newline inside a value would break the row for a reader of the log.
    return " ".join(_fmt(value).split()).replace("|", "/")
