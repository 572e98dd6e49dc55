"""Turning SIGTERM/SIGHUP into an exception that leaves no output behind.

An interruption is not a result: a job that is told to stop must not write a ``failed``
``metrics.json`` (Snakemake would take it as complete), and must not leave a half-written
file under a final name (every output goes through :func:`attnbench.results.atomic_write_bytes`).
:class:`Interrupted` derives from ``BaseException`` so that the ``except Exception`` blocks
that record variant failures let it through, like ``KeyboardInterrupt``.

Inside :func:`interruptible`, a first signal either raises at once or -- while a training
loop has called :meth:`Guard.defer` -- sets :attr:`Guard.pending` so that the loop stops at
the next step boundary (and can write a checkpoint there).  A second signal always raises
at once.  SIGKILL cannot be caught; the atomic writes are what protect against it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


class Interrupted(BaseException):
    """The job was told to stop (SIGTERM/SIGHUP); nothing was written under a final name."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum = signum
        self.detail = detail
        super().__init__(self.message)

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def message(self) -> str:
        return f"interrupted by {self.name}" + (f" ({self.detail})" if self.detail else "")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Guard:
    def __init__(self):
        self.pending: int | None = None
        self.deferring = False

    @contextlib.contextmanager
    def defer(self):
        """Within this block a first signal only sets ``pending`` (checked by the caller)."""
        self.deferring = True
        try:
            yield self
        finally:
            self.deferring = False

    def handler(self, signum, frame):
        if self.deferring and self.pending is None:
            self.pending = signum
            return
        raise Interrupted(signum)


@contextlib.contextmanager
def interruptible():
    """Install the handlers (main thread only; elsewhere a no-op guard) and restore them."""
    guard = Guard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {s: signal.signal(s, guard.handler) for s in SIGNALS}
    try:
        yield guard
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux).

    A job runs as ``shell -> python``; when Snakemake stops (Ctrl-C: "Terminating
    processes...") it ends the shells, and without this the Python job would train on and write
    a result Snakemake already counted as failed.  With SIGTERM it stops like any interrupted
    job: no result under a final name.  Elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call: the kernel will not tell us
        os.kill(os.getpid(), sig)


JOB_SCRIPTS = ("scripts/train.py", "scripts/probe.py", "scripts/sweep.py")


def stop_jobs_on_interrupt() -> None:
    """In Snakemake's process: on SIGINT, send SIGTERM to the running job processes first.

    Snakemake's local executor answers an interrupt with "Terminating processes..." and then
    *waits* for its running jobs, so a training job would train to its end and write a result
    Snakemake has already counted as failed.  This handler (installed from the workflow, main
    thread only) stops them -- they end as interrupted jobs, writing nothing -- and then hands
    the signal on to Snakemake's own handling.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                if any(script in " ".join(child.cmdline()) for script in JOB_SCRIPTS):
                    child.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
