"""Hypothesis profiles for the property-based tests (tests/integration/test_fuzz.py).

``ci`` (the default) is derandomized, so every run tries the same examples and stays short;
``long`` explores far more, for local runs: ``HYPOTHESIS_PROFILE=long pytest tests/integration/test_fuzz.py``.
"""

import os

from hypothesis import HealthCheck, Phase, settings

_SLOW_CHECKS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_CHECKS,
    # Shrinking against a live server can take minutes: CI reports the failing example as drawn
    # (reproduce and shrink it locally with the long profile).
    phases=[Phase.explicit, Phase.generate],
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_CHECKS,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
