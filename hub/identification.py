"""1:N identification figures of a face engine with the hub's gallery, in NIST FRTE terms.

The protocol over a folder of ``<person>/<image>`` files (LFW's layout):

* every person with two or more images enrols their first image (sorted by name);
  their other images are **mated** searches;
* people with one image are split alternately (sorted by name) into **distractors**,
  enrolled to make the gallery larger, and **non-mated** searches, whose person is
  not in the gallery.

Every search is an exact investigative search of the top ``k`` persons. Reported:
rank-1 and rank-``k`` identification rates of the mated searches (the mate among the
first 1 or ``k`` candidates), and, from the mate's score (``-inf`` when it was not
returned) and each non-mated search's top score, the alert threshold and FNIR at
each target FPIR (:func:`matching.calibration.calibrate`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from matching.calibration import Calibration, calibrate
from matching.gallery import Gallery, GalleryConfig, SearchMode
from matching.policy import IndexPolicy

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

DEFAULT_FPIRS = (0.01, 0.003)


@dataclass(frozen=True)
class Split:
    """Which images enrol and which search, as names of ``(person, image)``."""

    enrolled: list[tuple[str, str]]
    distractors: list[tuple[str, str]]
    mated: list[tuple[str, str]]
    nonmated: list[tuple[str, str]]


def split_people(images: Mapping[str, Sequence[str]]) -> Split:
    """The protocol's split of ``person -> image names`` (see the module docstring)."""
    enrolled: list[tuple[str, str]] = []
    distractors: list[tuple[str, str]] = []
    mated: list[tuple[str, str]] = []
    nonmated: list[tuple[str, str]] = []
    singles = 0
    for person in sorted(images):
        names = sorted(images[person])
        if not names:
            continue
        if len(names) >= 2:
            enrolled.append((person, names[0]))
            mated.extend((person, n) for n in names[1:])
        else:
            (distractors if singles % 2 == 0 else nonmated).append((person, names[0]))
            singles += 1
    return Split(enrolled, distractors, mated, nonmated)


class IdentificationReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model_id: str
    gallery_persons: int = Field(description="Enrolled mates plus distractors")
    mated_searches: int
    nonmated_searches: int
    k: int
    rank1: float = Field(description="Share of mated searches with the mate ranked first")
    rank_k: float = Field(description="Share of mated searches with the mate in the top k")
    calibrations: list[Calibration] = Field(description="Alert threshold and FNIR per FPIR")


def evaluate_identification(
    model_id: str,
    vectors: Mapping[tuple[str, str], F32],
    split: Split,
    *,
    k: int = 10,
    fpirs: Sequence[float] = DEFAULT_FPIRS,
) -> IdentificationReport:
    """Enrol, search and score. Images missing from ``vectors`` (unreadable files) are
    left out of the protocol; the caller reports them."""
    if not vectors:
        raise ValueError("no vectors to evaluate")
    dim = len(next(iter(vectors.values())))
    gallery_images = [x for x in split.enrolled + split.distractors if x in vectors]
    mated = [x for x in split.mated if x in vectors]
    nonmated = [x for x in split.nonmated if x in vectors]
    if not gallery_images or not mated or not nonmated:
        raise ValueError(
            f"need enrolled images, mated and non-mated searches; have {len(gallery_images)}, "
            f"{len(mated)}, {len(nonmated)}"
        )
    person_id = {person: i for i, person in enumerate(sorted({p for p, _ in gallery_images}))}
    # Exact search: a flat index whatever the size, so the figures are the model's.
    gallery = Gallery(
        GalleryConfig(
            model_id=model_id,
            dim=dim,
            purpose="evaluation",
            policy=IndexPolicy(flat_max_bytes=1 << 62),
        )
    )
    gallery.add(
        np.arange(len(gallery_images)),
        [person_id[p] for p, _ in gallery_images],
        np.stack([vectors[x] for x in gallery_images]),
        model_id=model_id,
    )
    search_k = max(k, 50)  # deeper than k so a mate's score is known below rank k
    mate_scores = np.full(len(mated), -np.inf)
    rank1 = rank_k = 0
    if mated:
        persons, _, scores = gallery.search_arrays(
            np.stack([vectors[x] for x in mated]), search_k, SearchMode.INVESTIGATIVE
        )
        for i, (person, _) in enumerate(mated):
            hits = np.flatnonzero(persons[i] == person_id[person])
            if len(hits):
                rank = int(hits[0])
                mate_scores[i] = float(scores[i, rank])
                rank1 += rank == 0
                rank_k += rank < k
    _, _, top = gallery.search_arrays(
        np.stack([vectors[x] for x in nonmated]), 1, SearchMode.INVESTIGATIVE
    )
    top_scores = top[:, 0].astype(np.float64)
    return IdentificationReport(
        model_id=model_id,
        gallery_persons=len(person_id),
        mated_searches=len(mated),
        nonmated_searches=len(nonmated),
        k=k,
        rank1=rank1 / len(mated),
        rank_k=rank_k / len(mated),
        calibrations=[calibrate(mate_scores, top_scores, f) for f in fpirs],
    )
