"""The camera as an edge agent: frames to sightings over the outbox and the MQTT link.

:class:`CameraAgent` is an :class:`~edge.agent.EdgeAgent` (durable outbox, MQTT link,
retained birth and will, the hub's config) whose events come from the camera
pipeline (:mod:`edge.camera.pipeline`) running on a thread of its own.

Threads
    * The *agent thread* runs :meth:`~edge.agent.EdgeAgent.run`: the send loop, acks,
      configs, and the check-ins and telemetry of :meth:`CameraAgent.tick`. Only it
      touches the outbox, which is not safe to share between threads.
    * The *frame thread* reads the source and runs the pipeline. Sightings and
      watchlist alarms leave it through an :class:`~edge.camera.events.OutboxPublisher`
      bound to :meth:`~edge.agent.EdgeAgent.post_event`: the envelope is made on the
      frame thread with its final ``event_id`` and ``captured_at`` (so an alarm can
      name its sighting), and the agent thread stamps ``boot_id`` and ``seq`` while
      committing it, in the order made. An event is on disk one turn of the agent loop
      after it was made (at most ``idle_wait_s``), whatever the state of the link.
    * The link's own thread (:class:`~edge.comms.mqtt.EdgeLink`) and, for an RTSP
      stream or a capture device, the source's reader thread.

Configuration from the hub
    A pushed camera profile is checked as every agent's is (schema, family, device
    model) and by :meth:`CameraAgent.check_profile`: its ``model_id`` must be the
    engine's (the hub matches sightings against galleries of that model), its detector
    must be one this device can build (``yunet`` and ``scrfd`` need ``--engine``), and
    a folder or video source must exist here. The engine a new detector needs is built
    during that check, so a profile that cannot run is refused (and the refusal shown
    in the retained state's ``config_error``) rather than failing later. ``--source``
    and ``--fps`` given on the command line stay in force over every profile
    (:class:`~edge.camera.command.CameraOverrides`).

    An applied profile takes effect on the frame thread between two frames: the open
    tracks are ended and their sightings sent under the old settings, then the
    pipeline is rebuilt with the new ones; track ids keep counting within the boot. A
    new ``source`` or ``fps`` also reopens a live source (RTSP, capture device) at
    once. A recorded source (folder, video file) is not reopened, since that would
    replay it from the start: there a new ``source`` or ``fps`` applies at the next
    start, the rest at once. The offline watchlist given with ``--watchlist`` stays
    whatever the profile's ``offline_watchlist`` section says.

Ending
    A live source runs until the agent is stopped; a stream that drops is reopened by
    the source itself, and one that ends is reopened after a backoff (1 s doubling to
    30 s). A recorded source ends, and any source ends after ``max_frames`` frames. The
    open tracks are then sent; with ``exit_when_done`` the agent goes on delivering
    until the outbox is empty (the hub acked everything) or ``drain_timeout_s`` has
    passed, then stops. What was not acked stays in the outbox for the next start.

    At shutdown the frame thread is stopped first (a live source is interrupted even
    while it waits for a frame), its last sightings are committed, then the link and
    the outbox close. A source that cannot be opened at start stops the agent with
    :attr:`CameraAgent.failure` saying why.

Check-ins and telemetry
    A ``checkin`` at start and every ``heartbeat_s`` of the profile, with the outbox
    depth; ``tele`` every ``telemetry_interval_s`` with the outbox depth and the free
    space of the outbox's disk.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import fields
from pathlib import Path

from devices.catalog import DeviceModel
from devices.firmware import CameraProfile, DeviceSource, DirSource, FileSource, RtspSource
from devices.protocol import CheckinBody, TelemetryBody
from edge.agent import AgentTuning, EdgeAgent, Profile
from edge.camera.command import CameraOverrides, EngineChoice, detector_label
from edge.camera.events import OutboxPublisher
from edge.camera.pipeline import (
    CameraConfigError,
    CameraPipeline,
    CameraStats,
    PipelineOptions,
)
from edge.camera.sources import CameraSource, FrameSource, LiveFrames, SourceError, open_source
from edge.comms.mqtt import MqttSettings
from edge.watchlist import Watchlist
from models.errors import ModelError

__all__ = ["CameraAgent", "merge_stats"]

logger = logging.getLogger(__name__)

_REOPEN_FIRST_S = 1.0
_REOPEN_MAX_S = 30.0
_DONE_CHECK_S = 0.1
"""How often the agent thread looks whether the frame thread has finished."""


def merge_stats(parts: list[CameraStats]) -> CameraStats:
    """The sum of several pipelines' counts and times (one per profile in force)."""
    total = CameraStats()
    for part in parts:
        for f in fields(CameraStats):
            if f.name == "seconds":
                for stage, seconds in part.seconds.items():
                    total.seconds[stage] = total.seconds.get(stage, 0.0) + seconds
            elif f.name == "source":
                total.source = part.source or total.source
            else:
                setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
    return total


def _is_live(source: CameraSource) -> bool:
    return isinstance(source, RtspSource | DeviceSource)


def _source_changed(old: CameraProfile, new: CameraProfile) -> bool:
    return old.source != new.source or old.fps != new.fps


class CameraAgent(EdgeAgent):
    """A camera's agent (see the module docstring).

    ``profile`` is the camera profile as configured (before ``overrides``), used until
    the hub's (or the one stored by an earlier run) applies. ``engines`` gives the
    face engine for a profile; ``watchlist`` is the offline watchlist, if any, and
    ``options`` the pipeline settings outside the profile (the detector's name is set
    from the engine).
    """

    profile_type = CameraProfile

    def __init__(
        self,
        *,
        device_id: str,
        model: DeviceModel,
        profile: CameraProfile,
        mqtt: MqttSettings,
        outbox_path: Path,
        engines: EngineChoice,
        overrides: CameraOverrides | None = None,
        watchlist: Watchlist | None = None,
        options: PipelineOptions | None = None,
        max_frames: int | None = None,
        exit_when_done: bool = False,
        drain_timeout_s: float = 60.0,
        frame_join_timeout_s: float = 30.0,
        tuning: AgentTuning | None = None,
        event_log: Path | None = None,
    ) -> None:
        # check_profile runs inside EdgeAgent.__init__ (on a stored config): set up first.
        self.engines = engines
        self.overrides = overrides or CameraOverrides()
        self.watchlist = watchlist
        self.options = options or PipelineOptions()
        self.max_frames = max_frames
        self.exit_when_done = exit_when_done
        self.drain_timeout_s = drain_timeout_s
        self.frame_join_timeout_s = frame_join_timeout_s
        try:
            self._check_camera(profile)
        except ValueError as exc:
            raise CameraConfigError(str(exc)) from None
        super().__init__(
            device_id=device_id,
            model=model,
            profile=profile,
            mqtt=mqtt,
            outbox_path=outbox_path,
            tuning=tuning,
            event_log=event_log,
        )
        self.failure: str | None = None
        """Why the frame thread stopped, when it stopped on an error."""
        self.failure_is_config = False
        """True when :attr:`failure` is a source or setting problem, not a crash."""
        self.frames_processed = 0
        self.frames_done = threading.Event()
        """Set when the frame thread has finished (source ended, max_frames, stop)."""
        self._publisher = OutboxPublisher(device_id, self.post_event)
        self._lock = threading.Lock()
        self._wanted = self.overrides.apply(self.camera_profile)
        self._wanted_gen = 0
        self._running: CameraProfile | None = None
        self._source: FrameSource | None = None
        self._pipeline: CameraPipeline | None = None
        self._finished_stats: list[CameraStats] = []
        self._frames_stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._next_checkin = self._t0
        self._next_telemetry = self._t0
        self._done_at: float | None = None

    # -- what the agent runs ------------------------------------------------------------

    @property
    def camera_profile(self) -> CameraProfile:
        """The camera profile in force, before the command-line overrides."""
        assert isinstance(self.profile, CameraProfile)
        return self.profile

    @property
    def running_profile(self) -> CameraProfile | None:
        """The settings the frame thread runs with now (overrides applied), once it
        has started; a pushed profile shows here once the pipeline has taken it."""
        return self._running

    def camera_stats(self) -> CameraStats:
        """Counts and times of every pipeline this agent ran, the current one included."""
        with self._lock:
            parts = list(self._finished_stats)
            if self._pipeline is not None:
                parts.append(self._pipeline.stats)
        return merge_stats(parts)

    def _check_camera(self, profile: CameraProfile) -> None:
        effective = self.overrides.apply(profile)
        try:
            _, engine = self.engines.engine_for(effective)
        except (CameraConfigError, ModelError) as exc:
            raise ValueError(str(exc)) from None
        if engine.model_id != effective.model_id:
            raise ValueError(
                f"model_id {effective.model_id} is not this camera's engine's "
                f"({engine.model_id}); the hub would match its sightings against the "
                "wrong galleries"
            )
        watchlist = self.watchlist
        if watchlist is not None and watchlist.model_id != engine.model_id:
            raise ValueError(
                f"the offline watchlist is for {watchlist.model_id}, not {engine.model_id}"
            )
        source = effective.source
        if isinstance(source, DirSource) and not Path(source.path).is_dir():
            raise ValueError(f"source.path: no folder {source.path} on this device")
        if isinstance(source, FileSource) and not Path(source.path).is_file():
            raise ValueError(f"source.path: no file {source.path} on this device")

    def check_profile(self, profile: Profile) -> None:
        """Refuse a camera profile this camera cannot run (see the module docstring)."""
        if not isinstance(profile, CameraProfile):
            raise ValueError(f"a {profile.type!r} profile is not a camera profile")
        self._check_camera(profile)

    def profile_changed(self, profile: Profile) -> None:
        """Hand the new profile to the frame thread; interrupt a live source whose
        stream or frame rate changes, so it is reopened at once."""
        assert isinstance(profile, CameraProfile)
        effective = self.overrides.apply(profile)
        with self._lock:
            self._wanted = effective
            self._wanted_gen += 1
        running = self._running
        if running is None or not _source_changed(running, effective):
            return
        source = self._source
        if isinstance(source, LiveFrames):
            logger.info("%s: new source settings; reopening the stream", self.device_id)
            source.interrupt()
        elif not _is_live(running.source):
            logger.warning(
                "%s: new source or fps in the profile; a recorded source is not reopened "
                "(it would replay from the start): they apply at the next start",
                self.device_id,
            )

    # -- the agent thread ---------------------------------------------------------------

    def tick(self, now: float) -> float:
        """Start the frame thread on the first call; send check-ins and telemetry when
        due; stop when the frames are done (and, with ``exit_when_done``, delivered)."""
        if self._thread is None:
            self._start_frames()
        profile = self.camera_profile
        if now >= self._next_checkin:
            self._next_checkin = now + profile.heartbeat_s
            self.emit_event(
                "checkin",
                CheckinBody(
                    next_checkin_s=profile.heartbeat_s,
                    uptime_s=int(now - self._t0),
                    outbox_depth=self.outbox.events,
                ),
            )
        if now >= self._next_telemetry:
            self._next_telemetry = now + profile.telemetry_interval_s
            self.emit_telemetry(
                TelemetryBody(
                    outbox_depth=self.outbox.events,
                    uptime_s=int(now - self._t0),
                    disk_free_mb=self._disk_free_mb(),
                )
            )
        if self.frames_done.is_set():
            self._after_frames(now)
        return min(self._next_checkin, self._next_telemetry, now + _DONE_CHECK_S) - now

    def _disk_free_mb(self) -> int | None:
        try:
            return shutil.disk_usage(self.outbox.path.parent).free // (1024 * 1024)
        except OSError:
            return None

    def _after_frames(self, now: float) -> None:
        if self.failure is not None:
            logger.error("%s: stopping: %s", self.device_id, self.failure)
            self.stop()
            return
        if not self.exit_when_done:
            return
        self._commit_posted()  # the frame thread's last events, before counting
        if self._done_at is None:
            self._done_at = now
            logger.info("%s: frames done; %d events to deliver", self.device_id, self.outbox.events)
        if self.outbox.events == 0:
            logger.info("%s: every event delivered and acked; stopping", self.device_id)
            self.stop()
        elif now - self._done_at >= self.drain_timeout_s:
            logger.warning(
                "%s: %d events not acked after %g s; they stay in the outbox for the next start",
                self.device_id,
                self.outbox.events,
                self.drain_timeout_s,
            )
            self.stop()

    def shutdown(self) -> None:
        """Stop the frame thread (its last sightings are committed), then close the
        link and the outbox."""
        self._stop_frames()
        super().shutdown()

    def _start_frames(self) -> None:
        self._thread = threading.Thread(
            target=self._frame_main, name=f"camera-{self.device_id}", daemon=True
        )
        self._thread.start()

    def _stop_frames(self) -> None:
        self._frames_stop.set()
        source = self._source
        if isinstance(source, LiveFrames):
            source.interrupt()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(self.frame_join_timeout_s)
        if thread.is_alive():
            logger.error(
                "%s: the frame thread did not stop within %g s; sightings it makes from "
                "now on are lost",
                self.device_id,
                self.frame_join_timeout_s,
            )

    # -- the frame thread ---------------------------------------------------------------

    def _frame_main(self) -> None:
        try:
            self._frame_loop()
        except (SourceError, CameraConfigError) as exc:
            self.failure = str(exc)
            self.failure_is_config = True
            logger.error("%s: the camera cannot run: %s", self.device_id, exc)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.exception("%s: the frame thread failed", self.device_id)
        finally:
            self.frames_done.set()

    def _take_wanted(self, gen: int) -> tuple[int, CameraProfile] | None:
        with self._lock:
            if self._wanted_gen == gen:
                return None
            return self._wanted_gen, self._wanted

    def _wanted_pending(self, gen: int) -> bool:
        with self._lock:
            return self._wanted_gen != gen

    def _new_pipeline(self, profile: CameraProfile, first_track_id: int) -> CameraPipeline:
        config, engine = self.engines.engine_for(profile)
        options = self.options.model_copy(update={"detector_name": detector_label(config)})
        pipeline = CameraPipeline(
            engine,
            profile,
            sink=self._publisher,
            make_event=self._publisher,
            watchlist=self.watchlist,
            options=options,
            first_track_id=first_track_id,
        )
        with self._lock:
            if self._pipeline is not None:
                self._finished_stats.append(self._pipeline.stats)
            self._pipeline = pipeline
        logger.info(
            "%s: pipeline at %g fps, engine %s (%s), emit %s, tracks from %d",
            self.device_id,
            profile.fps,
            engine.model_id,
            options.detector_name,
            profile.track.emit,
            first_track_id,
        )
        return pipeline

    def _rebuild(self, pipeline: CameraPipeline, profile: CameraProfile) -> CameraPipeline:
        """End the open tracks under the old settings, then run the new ones."""
        pipeline.flush()
        return self._new_pipeline(profile, pipeline.next_track_id)

    def _frame_loop(self) -> None:
        with self._lock:
            gen, profile = self._wanted_gen, self._wanted
        pipeline = self._new_pipeline(profile, 1)
        started = False  # a frame has been read: from now on source failures are retried
        delay = _REOPEN_FIRST_S
        try:
            while not self._frames_stop.is_set():
                wanted = self._take_wanted(gen)
                if wanted is not None:
                    gen, profile = wanted
                    pipeline = self._rebuild(pipeline, profile)
                self._running = profile
                live = _is_live(profile.source)
                reopen = False
                try:
                    source = open_source(profile.source, fps=profile.fps)
                except SourceError as exc:
                    if not started:
                        raise
                    logger.error("%s: %s; trying again in %.0f s", self.device_id, exc, delay)
                    self._frames_stop.wait(delay)
                    delay = min(delay * 2, _REOPEN_MAX_S)
                    continue
                self._source = source
                pipeline.stats.source = source.stats
                logger.info("%s: reading %s", self.device_id, source.description)
                try:
                    for frame in source:
                        started = True
                        delay = _REOPEN_FIRST_S
                        wanted = self._take_wanted(gen)
                        if wanted is not None:
                            gen, new = wanted
                            if _source_changed(profile, new) and live:
                                pipeline = self._rebuild(pipeline, new)
                                profile = new
                                reopen = True
                                break
                            # A recorded source keeps its source and fps until the next start.
                            kept = {"source": profile.source, "fps": profile.fps}
                            new = new.model_copy(update=kept)
                            pipeline = self._rebuild(pipeline, new)
                            pipeline.stats.source = source.stats
                            profile = new
                            self._running = profile
                        pipeline.process_safely(frame)
                        self.frames_processed += 1
                        if self.max_frames is not None and self.frames_processed >= self.max_frames:
                            logger.info("%s: %d frames processed", self.device_id, self.max_frames)
                            self._frames_stop.set()
                        if self._frames_stop.is_set():
                            break
                except SourceError as exc:
                    if not started:
                        raise
                    logger.error("%s: %s", self.device_id, exc)
                finally:
                    self._source = None
                    source.close()
                if reopen or self._frames_stop.is_set():
                    continue
                if live and self._wanted_pending(gen):
                    continue  # interrupted for new source settings: reopen now
                if not live:
                    logger.info("%s: %s ended", self.device_id, source.description)
                    break
                logger.warning(
                    "%s: %s ended; reopening in %.0f s", self.device_id, source.description, delay
                )
                self._frames_stop.wait(delay)
                delay = min(delay * 2, _REOPEN_MAX_S)
        finally:
            pipeline.flush()
            logger.info("%s: camera stopped: %s", self.device_id, self.camera_stats().summary())
