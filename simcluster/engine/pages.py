"""How the engine asks the kernel for the memory of its large arrays.

numpy advises the kernel to back every array of 4 MB or more with transparent huge pages
(``madvise(MADV_HUGEPAGE)``, numpy 1.20 release notes). Where the kernel's THP defrag policy is ``madvise`` (the
default of many distributions: ``/sys/kernel/mm/transparent_hugepage/defrag``), a fault on such an array compacts
memory synchronously to find a free 2 MB page. A run's large arrays are short-lived temporaries (the per-part
routes of a merged class's symmetry check: 4.5 million entries, a dozen arrays of 36 MB each, made once), so that
compaction is pure cost: on the 2-core CI machine the interleaved 16,384-GPU run spent 1.3-1.8 s of system time in
it, of 5 s in all, and 0.2 s on ordinary 4 KB pages. numpy's own switch for it (``NUMPY_MADVISE_HUGEPAGE=0``, read
at import; ``_set_madvise_hugepage`` at run time) turns the advice off; the kernel's default policy (``always``
or ``madvise``) then decides as for any other memory. Results do not depend on it (the same arrays, the same
arithmetic).
"""

from __future__ import annotations

import os


def no_hugepage_advice() -> None:
    """Stop numpy advising huge pages for the arrays allocated from now on, unless the user chose otherwise
    (``NUMPY_MADVISE_HUGEPAGE`` set); a numpy without the switch is left as it is."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:   # numpy < 2: the same function in numpy.core
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return
    _set_madvise_hugepage(False)
