"""One BLAS thread: kwsd's numpy work is many tiny matrix products, one frame or clip at a time.

OpenBLAS (numpy's and scipy's wheels) splits even a (3 x 257) @ (257 x 40) product across
threads. On a machine whose cores are busy with other work each product then waits for
threads that cannot run: measured here with both cores loaded, ``tools/check_dataset.py``
over 2,314 clips took 45.4 s with OpenBLAS's default threads and 4.2 s with one, and the
stream pipeline took 4.3-4.6 ms of process CPU per audio second instead of 5.4-6.1 ms.
TensorFlow's own thread pools (training) are not BLAS and are left alone.

Called by the entry points (``kwsd`` and ``python -m kwsd`` before numpy loads, the tools in
their ``main``), never at import: importing kwsd does not change how a host program's numpy
runs.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: Environment variables read by BLAS libraries loaded later (and by child processes).
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread_before_numpy() -> None:
    """Ask the BLAS libraries loaded from now on (and child processes) for one thread, unless
    the user has set the variable. Costs nothing; effective only before numpy is imported."""
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def use_one_blas_thread() -> None:
    """The same, plus the BLAS libraries already loaded (through threadpoolctl, which the
    ``train`` extra installs: the tools import numpy before their ``main`` runs)."""
    one_blas_thread_before_numpy()
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        return  # the user asked for another number
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.debug("threadpoolctl is not installed: BLAS libraries already loaded keep their threads")
        return
    threadpool_limits(limits=1, user_api="blas")
