"""Simulated devices on real MQTT connections: ``lantern devices simulate``.

One process drives a whole fleet: every simulated wearable
(:class:`devices.simulation.WearableSimulator`) gets its own MQTT connection in one
:class:`edge.comms.mqtt.ClientPool`, and one :class:`devices.simulation.Scheduler`
steps them all on one asyncio loop; no thread per device.

:mod:`edge.simulate.runner`
    :func:`plan_fleet` (options to a checked :class:`FleetPlan`, including what
    ``--rate`` means) and :class:`FleetRunner` (connect, report, drain, close; the
    ``sent`` / ``acked`` / ``outstanding`` counts).
:mod:`edge.simulate.acker`
    :class:`AckAll`, a stand-in for the hub's ack path, for tests and load runs
    without a hub.
:mod:`edge.simulate.cli`
    The ``simulate`` and hidden ``ack-all`` commands, which join the ``lantern devices``
    group (:mod:`devices.devices_cli`) as ``lantern.devices.commands`` entry points.
"""

from __future__ import annotations

from edge.simulate.acker import AckAll, AckerStats
from edge.simulate.cli import app
from edge.simulate.runner import (
    FdLimitError,
    FleetPlan,
    FleetRunner,
    PlanError,
    Progress,
    RatePlan,
    RunResult,
    Tally,
    ensure_fd_limit,
    parse_mix,
    plan_fleet,
    plan_rate,
)

__all__ = [
    "AckAll",
    "AckerStats",
    "FdLimitError",
    "FleetPlan",
    "FleetRunner",
    "PlanError",
    "Progress",
    "RatePlan",
    "RunResult",
    "Tally",
    "app",
    "ensure_fd_limit",
    "parse_mix",
    "plan_fleet",
    "plan_rate",
]
