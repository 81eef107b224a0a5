"""The numba options of every search kernel (see docs/search.md, "Compiled code").

- ``cache``: compiled code is kept on disk next to the modules (where writable), so that
  :func:`latent.search.warm_up` can compile once per machine;
- ``fastmath`` only "nnan" and "nsz": keys are never NaN (queries that float32 cannot hold are answered by
  float64 brute force), and neither flag changes a finite result other than the sign of a zero; flags
  that do ("contract", "reassoc", "afn", "arcp") would break the float64 rescoring's bit-equality with
  numpy (a fused multiply-add rounds once instead of twice) and the scan's promise that a tile's keys
  come out the same in both of its passes;
- ``error_model="numpy"``: no division checks in the loops.
"""

from typing import Literal, TypedDict


class JitOptions(TypedDict):
    """The keyword arguments of ``numba.njit`` that every kernel takes (typed, so that ``njit(**JIT)``
    type-checks against numba's stubs)."""

    nogil: bool
    cache: bool
    boundscheck: bool
    error_model: Literal["python", "numpy"]
    fastmath: set[str]


JIT: JitOptions = {
    "nogil": True, "cache": True, "boundscheck": False, "error_model": "numpy", "fastmath": {"nnan", "nsz"}
}
