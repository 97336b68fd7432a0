"""anyedge: run a global anycast edge network the way the largest CDNs run theirs.

The network model (:mod:`anyedge.model`) is the base every other part stands on; see
``DESIGN.md`` in the repository for the layers above it.
"""

import os as _os

__version__ = "0.1.0"

# One BLAS thread unless the user sets another count.  anyedge's products are small
# (a dot of 18,474 users, a 300 x 18,474 sparse map): OpenBLAS's threads cost more
# than they save, and on a busy machine they wait on each other — measured with the
# other core loaded, one such dot took 3.4 ms on two threads and 6 us on one, and a
# day of the default twin 41 s against 12 s.  The variable must be set before numpy
# loads OpenBLAS, which is why it is here, at the package's first import.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")
