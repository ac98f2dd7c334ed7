"""Test tiers: tests marked ``slow`` have a reduced form, which they run when
``BITMOD_REDUCED=1`` (``make test``, CI); without it they run at full size (``make test-full``).

A slow test reads the tier through the ``reduced`` fixture or its module's ``REDUCED``
constant (:data:`REDUCED`); a slow test that reads neither would claim a reduced form it does
not have, so collection refuses it.

Tests marked ``heavy`` (a minute or more in either tier) are collected first: with ``-n 2
--dist worksteal`` a heavy test started last keeps one worker busy while the other waits (the
suite's last 90 s were one such test); started first, the short tests fill the other worker
and the two end together.
"""

from __future__ import annotations

import os

import pytest

REDUCED = os.environ.get("BITMOD_REDUCED") == "1"


@pytest.fixture
def reduced() -> bool:
    """True when the reduced tier runs (``BITMOD_REDUCED=1``)."""
    return REDUCED


def pytest_collection_modifyitems(config, items):
    # A stable sort: the heavy tests first, each group in collection order.
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
    for item in items:
        if item.get_closest_marker("slow") is None:
            continue
        module = getattr(item, "module", None)
        if "reduced" not in getattr(item, "fixturenames", ()) and not hasattr(module, "REDUCED"):
            raise pytest.UsageError(f"{item.nodeid} is marked slow but has no reduced form (use "
                                    "the `reduced` fixture)")
