"""Fleets: many simulated wearables on one site, with a mix of scenarios.

:func:`build_fleet` gives ``count`` :class:`~devices.simulation.wearable.WearableSimulator`
with ids ``{prefix}-{n:04d}`` (protocol syntax), scenarios shared out by the weights
of ``mix`` (largest-remainder rounding, so the counts are exact and reproducible) and
assigned to ids in a seeded shuffle. Each device is seeded from the fleet seed and
its id. The profile is the site's wearable profile from the firmware configuration
folder unless one is given.

The default mix (:data:`DEFAULT_MIX`) is mostly ordinary walking with every preset
represented; scenarios the site or profile cannot play are left out of it (no curfew
in a prison; no SOS on an ankle tag, whose profile disables it). A mix given
explicitly is not filtered: asking for the impossible raises
:class:`~devices.simulation.wearable.ScenarioError`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.firmware import WearableProfile, default_config_dir, load_profile
from devices.protocol import validate_device_id
from devices.simulation.scenarios import PRESETS, ScenarioSpec
from devices.simulation.site import SiteMap
from devices.simulation.wearable import ScenarioError, WearableSimulator, scenario_problems

__all__ = ["DEFAULT_MIX", "FleetSpec", "allocate", "build_fleet", "site_profile"]

logger = logging.getLogger(__name__)

DEFAULT_MIX: dict[str, float] = {
    "walk": 0.34,
    "exclusion_breach": 0.08,
    "leave_inclusion": 0.05,
    "curfew_violation": 0.05,
    "gnss_jitter": 0.07,
    "indoor_outdoor": 0.12,
    "strap_tamper": 0.05,
    "sos": 0.05,
    "battery_drain": 0.06,
    "silent": 0.06,
    "spoof_jump": 0.07,
}
"""Relative weights of the presets in a fleet by default."""


def _check_mix(mix: Mapping[str, float], known: Mapping[str, ScenarioSpec]) -> dict[str, float]:
    unknown = sorted(set(mix) - set(known))
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(known)}")
    for name, weight in mix.items():
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, not {weight}")
    if not any(weight > 0 for weight in mix.values()):
        raise ValueError("the mix needs at least one positive weight")
    return dict(mix)


class FleetSpec(BaseModel):
    """A fleet as configuration (for the demo and load runs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(1000, ge=1, le=1_000_000, description="Number of wearables")
    mix: dict[str, float] | None = Field(
        None, description="Scenario weights by preset name; the default mix if unset"
    )
    seed: int = Field(0, description="Seed of the whole fleet")
    id_prefix: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,50}$",
        description="Device ids are {id_prefix}-{n}; sim-{site} if unset",
    )

    @field_validator("mix")
    @classmethod
    def _known(cls, mix: dict[str, float] | None) -> dict[str, float] | None:
        return None if mix is None else _check_mix(mix, PRESETS)

    def build(
        self, site: SiteMap, *, start: datetime, profile: WearableProfile | None = None
    ) -> list[WearableSimulator]:
        """The fleet this describes, on ``site`` (see :func:`build_fleet`)."""
        return build_fleet(
            site,
            self.count,
            start=start,
            mix=self.mix,
            seed=self.seed,
            profile=profile,
            id_prefix=self.id_prefix,
        )


def allocate(count: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Share ``count`` out by ``weights`` with largest-remainder rounding: the counts
    add up to ``count``; ties go to the name listed first."""
    total = sum(weights.values())
    shares = {name: count * weight / total for name, weight in weights.items()}
    counts = {name: math.floor(share) for name, share in shares.items()}
    left = count - sum(counts.values())
    order = sorted(weights, key=lambda n: (-(shares[n] - counts[n]), list(weights).index(n)))
    for name in order[:left]:
        counts[name] += 1
    return counts


def site_profile(site: SiteMap) -> WearableProfile:
    """The firmware profile a site's wearables use, from the configuration folder
    (``$LANTERN_FIRMWARE_DIR`` or the packaged ``firmware_configs``)."""
    path = default_config_dir() / "profiles" / f"{site.wearable_profile}.yaml"
    profile = load_profile(path)
    if not isinstance(profile, WearableProfile):
        raise ScenarioError(f"{path}: profile {site.wearable_profile!r} is not a wearable profile")
    return profile


def build_fleet(
    site: SiteMap,
    count: int = 1000,
    *,
    start: datetime,
    mix: Mapping[str, float] | None = None,
    seed: int = 0,
    profile: WearableProfile | None = None,
    id_prefix: str | None = None,
    scenarios: Mapping[str, ScenarioSpec] | None = None,
) -> list[WearableSimulator]:
    """``count`` simulated wearables on ``site``, in id order (see the module docstring).

    ``scenarios`` replaces the presets the mix names refer to (default
    :data:`~devices.simulation.scenarios.PRESETS`).
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    known = dict(scenarios) if scenarios is not None else PRESETS
    profile = profile if profile is not None else site_profile(site)
    if mix is None:
        weights = {
            name: weight
            for name, weight in DEFAULT_MIX.items()
            if name in known and not scenario_problems(known[name], site, profile)
        }
        left_out = sorted(set(DEFAULT_MIX) - set(weights))
        if left_out:
            logger.info("fleet on %s leaves out scenarios it cannot play: %s", site.id, left_out)
    else:
        weights = _check_mix(mix, known)
    counts = allocate(count, {name: w for name, w in weights.items() if w > 0})
    names = [name for name, n in counts.items() for _ in range(n)]
    random.Random(f"lantern-fleet:{seed}").shuffle(names)

    prefix = id_prefix if id_prefix is not None else f"sim-{site.id}"
    width = max(4, len(str(count)))
    devices: list[WearableSimulator] = []
    for number, name in enumerate(names, start=1):
        device_id = validate_device_id(f"{prefix}-{number:0{width}d}")
        devices.append(
            WearableSimulator(device_id, site, known[name], profile=profile, start=start, seed=seed)
        )
    logger.info(
        "fleet of %d on %s: %s",
        count,
        site.id,
        ", ".join(f"{name} {n}" for name, n in counts.items() if n),
    )
    return devices
