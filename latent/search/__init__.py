r"""Exact, fast top-k search of the catalog under any score of :mod:`latent.scores`.

``SearchIndex().fit(mu, sigma)`` then ``.search(z, score, k, s)`` -> (ids, values) and
``.scores_all(z, score, s)``; ``.prepare(spreads, progress)`` builds the features of given spreads ahead
of the first query, and ``.is_prepared(s)`` says whether a query at s would wait for such a build.
:func:`warm_up` compiles every kernel once per machine. The maths, the certificate
that makes the results exact and the backends are in docs/search.md.
"""

from latent.search._index import BACKENDS, FUSED_MIN_ITEMS, NotFittedError, Progress, SearchIndex, warm_up

__all__ = ["BACKENDS", "FUSED_MIN_ITEMS", "NotFittedError", "Progress", "SearchIndex", "warm_up"]
