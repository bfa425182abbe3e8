"""Running data-writing tasks, in parallel when asked, with one progress bar."""

from __future__ import annotations

import multiprocessing
from typing import Callable, Sequence


def _star(packed):
    func, task = packed
    return func(*task)


def process_pool(workers: int):
    """A ``multiprocessing`` pool of ``workers`` processes that do not inherit the caller's threads.

    The workers start from a fork server (a fresh interpreter) where the platform has one, else by spawning.
    Forking the caller directly would copy it mid-flight: a lock held at that instant by one of its threads
    (torch's compile workers, a TensorBoard writer, a progress bar's monitor) stays held in the child for ever,
    and the pool waits on a worker that never finishes. As with any such pool, a script that calls this code at
    its top level needs an ``if __name__ == "__main__":`` guard.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers)


def run_with_progress(func: Callable, tasks: Sequence[tuple], workers: int, bar,
                      count: Callable[[object], int] = int) -> None:
    """Call ``func(*task)`` for every task and advance ``bar`` by ``count`` of each result (by default the result
    is the count), in the order the tasks finish. ``count`` runs in this process, so it may gather the results.

    With ``workers > 1`` the tasks run in a :func:`process_pool` (started after the bar, like the tasks in this
    process); ``func`` must be a module-level function.
    """
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            bar.update(count(func(*task)))
        return
    with process_pool(min(workers, len(tasks))) as pool:
        for result in pool.imap_unordered(_star, [(func, task) for task in tasks]):
            bar.update(count(result))
