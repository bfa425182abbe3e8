"""Running data-writing tasks, in parallel when asked, with one progress bar; cleaning up after dead writers."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence


def _star(packed):
    func, task = packed
    return func(*task)


def run_with_progress(func: Callable[..., int], tasks: Sequence[tuple], workers: int, bar) -> None:
    """Call ``func(*task)`` for every task and advance ``bar`` by each returned count.

    With ``workers > 1`` the tasks run in a process pool. It forks where the platform can: no
    ``if __name__ == "__main__"`` guard is needed in the caller's script, and the workers only run NumPy and PIL,
    so a parent's threads (torch, BLAS) do not matter to them. ``func`` must be a module-level function.
    """
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            bar.update(func(*task))
        return
    methods = multiprocessing.get_all_start_methods()
    mp_context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with mp_context.Pool(min(workers, len(tasks))) as pool:
        for n in pool.imap_unordered(_star, [(func, task) for task in tasks]):
            bar.update(n)


def remove_abandoned(parent: Path, prefix: str) -> None:
    """Delete folders ``parent/<prefix><pid>-...`` left by writers on this machine whose process no longer runs."""
    for tmp in parent.glob(prefix + "*"):
        pid = tmp.name[len(prefix):].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass
