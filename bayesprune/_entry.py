"""The ``bayesprune`` script and ``python -m bayesprune``: the command line, with a Ctrl-C or
SIGTERM that comes while torch and Pyro are still being imported (about a second and a half)
ending in one line and exit 130/143, as one anywhere else does. The signal is held until the
imports are done rather than raised inside them: a KeyboardInterrupt in the middle of numpy's
or torch's own imports left them half-imported (a traceback, or a RecursionError later)."""

import signal
import sys


def main() -> int:
    pending: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {
        sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in held
    }
    try:
        from bayesprune.cli import script_main as command_line
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        name = signal.Signals(pending[0]).name
        print(
            f"bayesprune: stopped by {name} while starting; nothing was written", file=sys.stderr
        )
        return 128 + pending[0]
    return command_line()
