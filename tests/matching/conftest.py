"""Fixtures of the matching tests: small seeded galleries of both index kinds.

Dimensions are small (16-64) so the suite stays fast; IVF is forced on a few hundred
templates with :func:`gallery_oracle.ivf_policy`. Helpers that are not fixtures
(the brute-force oracle, data with person structure) live in ``gallery_oracle``, so
the hypothesis tests, which cannot take function-scoped fixtures, use them too.
"""

from __future__ import annotations

import numpy as np
import pytest

from matching.policy import IndexPolicy
from tests.matching.gallery_oracle import DIM, Filled, fill, ivf_policy, make_persons, new_gallery


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20_240_611)


@pytest.fixture(params=["flat", "ivf"])
def filled(request: pytest.FixtureRequest, rng: np.random.Generator) -> Filled:
    """160 persons with 2-4 templates each (about 480), flat or IVF, and 30 queries."""
    kind: str = request.param
    policy = IndexPolicy() if kind == "flat" else ivf_policy()
    data = make_persons(rng, 160, DIM, templates=(2, 4), first_template=1000, first_person=500)
    result = fill(new_gallery(policy=policy), data, rng)
    assert result.gallery.stats().index_kind == kind
    return result
