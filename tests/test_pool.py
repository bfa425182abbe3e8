import threading

import pool_tasks
from cvae_video.data._pool import process_pool, run_with_progress


class _Count:
    def __init__(self):
        self.n = 0

    def update(self, n):
        self.n += n


def test_workers_do_not_inherit_a_lock_held_by_another_thread():
    # a thread of the caller holds a lock at the moment the pool starts: a forked worker would find it held
    # for ever (and a worker waiting on it without a timeout would hang the pool)
    taken, release = threading.Event(), threading.Event()

    def hold():
        with pool_tasks.LOCK:
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    try:
        with process_pool(2) as pool:
            assert pool.map(pool_tasks.lock_is_free, range(2)) == [1, 1]
        bar = _Count()
        run_with_progress(pool_tasks.lock_is_free, [(0,), (1,), (2,)], 2, bar)
        assert bar.n == 3
    finally:
        release.set()
        holder.join()
