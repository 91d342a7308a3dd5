"""How many threads BLAS runs in a teaprint process.

OpenBLAS (numpy's and scipy's BLAS) starts one thread per core and, after
each call, keeps its threads spinning for a while before they sleep. The
matcher's BLAS calls are small (a 5 x 6 SVD per ellipse hypothesis, 400 x 128
products), so the extra threads buy nothing, and their spinning takes the
core that OpenCV's SIFT and matrix products were about to use: on the 2-core
box a query cost 335 ms of CPU and 176 ms of wall time with BLAS on two
threads, 195 and 151 ms on one, with the same answers (bench/README.md,
"BLAS on one thread"). Catalog workers do the same work and inherit the
setting through the environment.
"""

from __future__ import annotations

import os

ENVIRONMENT = "OPENBLAS_NUM_THREADS"


def limit_blas_threads() -> None:
    """Run BLAS on one thread in this process and in the processes it starts.

    A user who sets ``OPENBLAS_NUM_THREADS`` keeps that setting. The
    environment covers BLAS libraries loaded later and spawned children;
    `threadpoolctl` covers those this process already loaded (numpy's).
    """
    if ENVIRONMENT in os.environ:
        return
    os.environ[ENVIRONMENT] = "1"
    from threadpoolctl import threadpool_limits  # deferred: only a process that computes needs it

    threadpool_limits(limits=1, user_api="blas")
