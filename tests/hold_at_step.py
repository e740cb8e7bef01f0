"""Stop a training run from outside at a known step, whatever the machine's speed.

    python tests/hold_at_step.py STEP READY_FILE ARGS...    # = mlmctl ARGS..., held at STEP

Tests that signal a run mid-way used to poll metrics.jsonl and send the signal once the row of
step N showed up; by the time the signal landed a fast (or a loaded, slow-polling) machine had run
on, sometimes to the end. Here the run holds still right after writing that row: it creates
READY_FILE and sleeps until a signal arrives, passes it to the handler mlmctl installed (exactly
what a signal arriving at that moment does), and goes on. A SIGKILL simply ends it there. So the
run stops at step N every time, the way `MLMCTL_TEST_KILL` makes data stages die at unit N.

    r = stop_at_step([sys.executable, "-m", "mlmctl", "pretrain", ...], step=5, sig=signal.SIGTERM)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Waits that end on an event, not a guess: these only bound a run that never gets there.
HOLD_S = 600
_CATCH = (signal.SIGINT, signal.SIGTERM)


def stop_at_step(cmd: list[str], step: int, sig: int, *, env: dict | None = None,
                 stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run `cmd` (`[python, "-m", "mlmctl", ARGS...]`), held once metrics.jsonl has the row of
    `step`; send `sig` from here and wait for the exit."""
    assert cmd[1:3] == ["-m", "mlmctl"], cmd
    with tempfile.TemporaryDirectory(prefix="mlmctl-hold-") as tmp:
        ready = Path(tmp) / "ready"
        proc = subprocess.Popen([cmd[0], __file__, str(step), str(ready), *cmd[3:]], stdout=stdout,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + HOLD_S
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if not ready.exists():
                proc.kill()
                out, err = proc.communicate()
                raise AssertionError(f"the run ended (exit {proc.returncode}) or stalled before step {step}:\n"
                                     f"{err[-3000:]}")
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=HOLD_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _hold_until_a_signal(ready: Path) -> None:
    """Create `ready`, sleep until SIGINT or SIGTERM arrives, hand it to the handler in place."""
    got: list[int] = []
    inner = {s: signal.getsignal(s) for s in _CATCH}

    def note(signum, frame):
        got.append(signum)

    for s in _CATCH:
        signal.signal(s, note)
    ready.touch()
    deadline = time.monotonic() + HOLD_S  # a SIGKILL ends the process in this loop
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    for s, handler in inner.items():
        signal.signal(s, handler)
    for signum in got:
        if callable(inner[signum]):
            inner[signum](signum, None)
        else:  # SIG_DFL or SIG_IGN: what the process would have done without the hold
            signal.raise_signal(signum)


def _main(step: int, ready: Path, args: list[str]) -> int:
    from mlmctl.cli import main
    from mlmctl.training import MetricsWriter

    write = MetricsWriter.write

    def write_then_hold(self, row: dict) -> None:
        write(self, row)
        if self.enabled and row.get("step") == step and not ready.exists():
            _hold_until_a_signal(ready)

    MetricsWriter.write = write_then_hold
    return main(args)


if __name__ == "__main__":
    sys.exit(_main(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
