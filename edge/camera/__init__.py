"""The camera agent: frames to sightings (``lantern edge camera``).

* :mod:`edge.camera.sources`: folder, video file, RTSP and capture-device frames at
  the profile's frame rate;
* :mod:`edge.camera.pipeline`: detect, quality gate, align, track, embed once per
  track, emit a sighting per appearance and check the offline watchlist;
* :mod:`edge.camera.events`: the envelope factory and sink the pipeline is given
  (the agent's outbox in service; in-memory and JSON-lines ones for dry runs);
* :mod:`edge.camera.command`: setting a camera up from its command line (profile,
  overrides, engine, watchlist) and the pipeline-only ``camera`` command (dry runs);
* :mod:`edge.camera.agent`: :class:`CameraAgent`, the camera as an edge agent: the
  pipeline on a frame thread of its own, events through the agent's durable outbox and
  MQTT link, hub configs checked and applied (``lantern edge camera``, ``edge/cli.py``).

Tracking is :mod:`edge.tracking`, the offline watchlist :mod:`edge.watchlist`.
"""

from edge.camera.agent import CameraAgent, merge_stats
from edge.camera.command import (
    CameraOverrides,
    CameraSetup,
    EngineChoice,
    camera,
    make_camera_command,
    prepare_camera,
    run_camera,
)
from edge.camera.events import (
    CameraEventType,
    EventFactory,
    JsonLinesSink,
    ListSink,
    LocalEventFactory,
    OutboxPublisher,
    SightingSink,
)
from edge.camera.pipeline import (
    CameraConfigError,
    CameraPipeline,
    CameraStats,
    Engine,
    FaceSample,
    PipelineOptions,
)
from edge.camera.sources import (
    DirFrames,
    Frame,
    FrameSource,
    LiveFrames,
    RateLimiter,
    SourceError,
    SourceStats,
    VideoFileFrames,
    open_source,
    parse_source,
)

__all__ = [
    "CameraAgent",
    "CameraConfigError",
    "CameraOverrides",
    "CameraSetup",
    "CameraEventType",
    "CameraPipeline",
    "CameraStats",
    "DirFrames",
    "Engine",
    "EngineChoice",
    "EventFactory",
    "FaceSample",
    "Frame",
    "FrameSource",
    "JsonLinesSink",
    "ListSink",
    "LiveFrames",
    "LocalEventFactory",
    "OutboxPublisher",
    "PipelineOptions",
    "RateLimiter",
    "SightingSink",
    "SourceError",
    "SourceStats",
    "VideoFileFrames",
    "camera",
    "make_camera_command",
    "merge_stats",
    "open_source",
    "parse_source",
    "prepare_camera",
    "run_camera",
]
