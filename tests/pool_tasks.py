"""Module-level functions for the process-pool tests (workers import them by name)."""

import threading

LOCK = threading.Lock()


def lock_is_free(_: int) -> int:
    """1 when this process can take LOCK within a second, 0 when someone (a forked-off thread) holds it."""
    if LOCK.acquire(timeout=1.0):
        LOCK.release()
        return 1
    return 0
