"""Benchmarks: run as `python -m bench.<name>` from the repository root; each prints its figures."""
import os

# as facemon-recognizer does before numpy loads: one BLAS thread per process. Threaded BLAS on a 2-core box fights
# the station threads (the eye-state CNN's small matmuls would spin a second thread on every call), so a bench
# that runs the recognizer in-process measures what the product does only with this set.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
