"""Fixtures of the local Modal's tests."""

from __future__ import annotations

import pytest

from tests.emulator.isolation import BWRAP


@pytest.fixture(params=["bubblewrap", "host"])
def isolation(request: pytest.FixtureRequest, local_modal: object) -> object:
    """Run the test with sandboxes isolated by bubblewrap, then as host processes."""
    from harvest_iac.emulator.runtime.launcher import choose_launcher

    if request.param == "bubblewrap" and not BWRAP:
        pytest.skip("bubblewrap does not work here")
    emu = local_modal.emulator  # type: ignore[attr-defined]
    saved = emu.launcher
    emu.launcher = choose_launcher({"HARVEST_ISOLATION": request.param})
    yield request.param
    emu.launcher = saved
