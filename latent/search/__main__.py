"""``python -m latent.search``: compile the search's kernels once (see :func:`latent.search.warm_up`)."""

from __future__ import annotations

import sys
import time


def main() -> int:
    from latent.search import warm_up

    start = time.perf_counter()

    def report(done: int, total: int, message: str) -> None:
        print(f"\r[{done}/{total}] {message}".ljust(72), end="", flush=True)

    warm_up(report)
    print(f"\nsearch kernels ready in {time.perf_counter() - start:.1f} s (cached by numba for later runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
