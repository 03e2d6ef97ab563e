"""``python -m kwsd`` and the ``kwsd`` console script.

One BLAS thread is set here, before numpy loads (kwsd/blas.py says why); importing the kwsd
package elsewhere changes nothing about how a host program's numpy runs.
"""

from kwsd.blas import one_blas_thread_before_numpy


def main() -> None:
    one_blas_thread_before_numpy()
    from kwsd.cli import run

    run()


if __name__ == "__main__":
    main()
