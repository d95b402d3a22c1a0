"""The camera agent: frames to sightings (``lantern edge camera``).

* :mod:`edge.camera.sources`: folder, video file, RTSP and capture-device frames at
  the profile's frame rate;
* :mod:`edge.camera.pipeline`: detect, quality gate, align, track, embed once per
  track, emit a sighting per appearance and check the offline watchlist;
* :mod:`edge.camera.events`: the envelope factory and sink the pipeline is given
  (the agent's outbox in service; in-memory and JSON-lines ones for dry runs);
* :mod:`edge.camera.command`: the ``camera`` command and the engine a profile needs.

Tracking is :mod:`edge.tracking`, the offline watchlist :mod:`edge.watchlist`.
"""

from edge.camera.command import camera, make_camera_command, run_camera
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
    "CameraConfigError",
    "CameraEventType",
    "CameraPipeline",
    "CameraStats",
    "DirFrames",
    "Engine",
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
    "open_source",
    "parse_source",
    "run_camera",
]
