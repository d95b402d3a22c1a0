"""Matching benchmark: Lantern's Gallery against raw FAISS, exact search, hnswlib and usearch.

Everything is measured in one run on the same seeded data (``matching.datasets``):

* ``exact``     FAISS ``IndexFlatIP``: ground truth and the brute-force floor.
* ``lantern``   ``matching.Gallery`` through its public API, index chosen by its policy.
* ``faiss-raw`` the same FAISS index with the same parameters, searched directly, with
                FAISS's own exact refinement (``IndexRefineFlat``): our overhead.
* ``hnswlib``, ``usearch``: HNSW libraries, ``ef`` swept, reported at the smallest
                ``ef`` that reaches Lantern's recall (or their best if none does).
* ``sweep``     other FAISS index kinds and parameters measured before choosing.

Recall is defined on what a search is for: ``recall_at_1`` is, over mated queries,
the share whose top-1 *person* equals exact search's top-1 person; ``recall_at_10``
is, over all queries, the overlap of the top-10 persons with exact search's.

Run ``python -m benchmarks.bench_matching --size S`` (100k, a few minutes), ``M``
(1M) or ``L`` (5M). Writes ``benchmarks/results/matching_<size>.json`` and ``.md``.
"""

from __future__ import annotations

import os

# Before any OpenMP runtime starts: spinning OpenMP threads on a 2-core machine shared
# with the benchmark's own client threads halve throughput (see ARCHITECTURE.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from benchmarks.machine import base_machine_info, dist_version  # noqa: E402
from matching.datasets import SyntheticFaces  # noqa: E402
from matching.gallery import Gallery, GalleryConfig  # noqa: E402
from matching.policy import IndexPlan, IndexPolicy, search_params  # noqa: E402

logger = logging.getLogger("bench_matching")

SIZES = {"S": 100_000, "M": 1_000_000, "L": 5_000_000}
QUERIES = {"S": (2000, 1000), "M": (4000, 1000), "L": (4000, 1000)}
K = 10
FETCH = 2 * K  # templates an anchor returns per query: enough for K persons at 2 per person
RESULTS = Path(__file__).resolve().parent / "results"

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
SearchFn = Callable[[F32], I64]  # queries -> template ids (n, FETCH), best first, -1 padded


# -- machine and library facts -------------------------------------------------------
def machine_info() -> dict[str, Any]:
    return base_machine_info(
        ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_NUM_THREADS")
    ) | {
        "faiss": faiss.__version__,
        "faiss_simd": faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else "",
        "hnswlib": dist_version("hnswlib"),
        "usearch": dist_version("usearch"),
        "omp_max_threads": faiss.omp_get_max_threads(),
    }


# -- measurement helpers --------------------------------------------------------------
def persons_topk(templates: I64, tpp: int, k: int = K) -> I64:
    """Template ids (n, m) best first -> first k distinct persons per row (-1 padded)."""
    out = np.full((len(templates), k), -1, dtype=np.int64)
    persons = np.where(templates >= 0, templates // tpp, -1)
    for i, row in enumerate(persons):
        seen: list[int] = []
        for p in row.tolist():
            if p >= 0 and p not in seen:
                seen.append(p)
                if len(seen) == k:
                    break
        out[i, : len(seen)] = seen
    return out


def recalls(found: I64, truth: I64, mated: npt.NDArray[np.bool_]) -> tuple[float, float]:
    r1 = float(np.mean(found[mated, 0] == truth[mated, 0]))
    overlap = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return r1, float(np.mean(overlap))


def batched(fn: Callable[[F32], Any], queries: F32, batch: int = 256) -> tuple[list[Any], float]:
    """Run ``fn`` over batches; returns outputs and queries per second."""
    outs = []
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        outs.append(fn(queries[i : i + batch]))
    return outs, len(queries) / (time.perf_counter() - start)


def latencies(fn: Callable[[F32], Any], queries: F32, clients: int) -> tuple[float, float]:
    """p50 and p99 (ms) of single-query calls from ``clients`` concurrent threads."""
    times: list[float] = []
    lock = threading.Lock()

    threads_per_client = faiss.omp_get_max_threads()

    def client(rows: F32) -> None:
        # OpenMP's thread count is per calling thread: a new thread starts at the default.
        faiss.omp_set_num_threads(threads_per_client)
        local = []
        for i in range(len(rows)):
            t0 = time.perf_counter()
            fn(rows[i : i + 1])
            local.append((time.perf_counter() - t0) * 1000)
        with lock:
            times.extend(local)

    threads = [threading.Thread(target=client, args=(queries[c::clients],)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q = statistics.quantiles(times, n=100, method="inclusive")
    return q[49], q[98]


@dataclass
class Result:
    name: str
    params: dict[str, Any]
    recall_at_1: float = 0.0
    recall_at_10: float = 0.0
    p50_ms_single: float = 0.0
    p99_ms_single: float = 0.0
    p50_ms_single_2clients: float = 0.0
    p99_ms_single_2clients: float = 0.0
    batch_qps: float = 0.0
    bytes_per_vector: float = 0.0
    build_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("name", "extra")}
        d.update(self.extra)
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


class Bench:
    def __init__(self, data: SyntheticFaces, xb: F32, single_n: int) -> None:
        self.data = data
        self.xb = xb
        q = data.queries()
        self.xq = q.vectors
        self.mated = q.mated
        self.single_n = single_n
        self.truth: I64 = np.empty((0, K), dtype=np.int64)

    def measure(
        self,
        name: str,
        params: dict[str, Any],
        search_templates: SearchFn | None = None,
        search_persons: SearchFn | None = None,
        *,
        single_n: int | None = None,
        batch: int = 256,
    ) -> Result:
        """Measure one system. Exactly one of the two search functions is given: one
        returning template ids (post-processed to persons outside the timing), or one
        returning persons directly (the system's own API, timed whole)."""
        fn = search_templates or search_persons
        assert fn is not None
        tpp = self.data.templates_per_person
        faiss.omp_set_num_threads(2)
        outs, qps = batched(fn, self.xq, batch)
        found = np.concatenate(outs)
        persons = found[:, :K] if search_persons else persons_topk(found, tpp)
        r1, r10 = recalls(persons, self.truth, self.mated) if len(self.truth) else (1.0, 1.0)
        # Slow settings get fewer single-query samples (about 10 s of them, at least 100).
        n = max(100, min(single_n or self.single_n, int(10 * qps / 2)))
        sample = self.xq[:: max(1, len(self.xq) // n)][:n]
        faiss.omp_set_num_threads(1)
        p50, p99 = latencies(fn, sample, clients=1)
        p50_2, p99_2 = latencies(fn, sample, clients=2)
        faiss.omp_set_num_threads(2)
        res = Result(name, params, r1, r10, p50, p99, p50_2, p99_2, qps)
        logger.info(
            "%-10s %-48s r@1 %.4f r@10 %.4f p50 %.3f p99 %.3f ms  %7.0f QPS",
            name,
            json.dumps(params),
            r1,
            r10,
            p50,
            p99,
            qps,
        )
        return res


# -- systems ----------------------------------------------------------------------------
def run_exact(bench: Bench) -> Result:
    """Brute force straight over the (memory-mapped) vectors: no copy, so L fits."""

    def fn(q: F32) -> I64:
        _, ids = faiss.knn(q, bench.xb, FETCH, metric=faiss.METRIC_INNER_PRODUCT)
        out: I64 = ids.astype(np.int64)
        return out

    faiss.omp_set_num_threads(2)
    truth_templates = np.concatenate(batched(fn, bench.xq, 1024)[0])
    bench.truth = persons_topk(truth_templates, bench.data.templates_per_person)
    res = bench.measure("exact", {"index": "flat (faiss.knn)"}, fn, single_n=60, batch=1024)
    res.bytes_per_vector = bench.xb.shape[1] * 4
    return res


def run_lantern(bench: Bench, policy: IndexPolicy, workdir: Path) -> tuple[Result, Gallery]:
    dim = bench.xb.shape[1]
    gallery = Gallery(
        GalleryConfig(model_id=f"synthetic-{dim}", dim=dim, purpose="watchlist", policy=policy)
    )
    tpp = bench.data.templates_per_person
    rows = len(bench.xb)

    def blocks() -> Iterator[tuple[I64, I64, F32]]:
        for start in range(0, rows, 65_536):
            tids = np.arange(start, min(start + 65_536, rows), dtype=np.int64)
            yield tids, tids // tpp, bench.xb[start : start + 65_536]

    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    gallery.rebuild(blocks(), spill_dir=workdir)
    build = time.perf_counter() - t0
    stats = gallery.stats()

    def fn(q: F32) -> I64:
        return gallery.search_arrays(q, K)[0]

    res = bench.measure("lantern", {"index": stats.index}, search_persons=fn)
    res.build_s = build
    res.bytes_per_vector = stats.resident_bytes / stats.count
    res.extra["store_bytes_per_vector"] = stats.mapped_bytes / stats.count
    res.extra["index_kind"] = stats.index_kind
    return res, gallery


def run_faiss_raw(bench: Bench, gallery: Gallery) -> Result:
    """The gallery's own index, cloned, searched directly, refined by FAISS itself."""
    plan: IndexPlan = gallery._state.plan  # noqa: SLF001 - the benchmark mirrors internals
    base = faiss.deserialize_index(faiss.serialize_index(gallery._state.index))  # noqa: SLF001
    params: Any = None
    if plan.kind == "flat":
        index = base
    else:
        index = faiss.IndexRefineFlat(base, faiss.swig_ptr(bench.xb))
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = plan.rerank / FETCH
        params.base_index_params = search_params(plan)

    def fn(q: F32) -> I64:
        out: I64 = index.search(q, FETCH, params=params)[1].astype(np.int64)
        return out

    res = bench.measure("faiss-raw", {"index": plan.describe(), "refine": "IndexRefineFlat"}, fn)
    res.bytes_per_vector = faiss.serialize_index(base).nbytes / len(bench.xb) + (
        0 if plan.kind == "flat" else bench.xb.shape[1] * 4
    )
    return res


def _pick(results: list[Result], target: float) -> Result:
    """The fastest (batched) setting reaching ``target`` recall@1, else the best recall."""
    good = [r for r in results if r.recall_at_1 >= target]
    if good:
        return max(good, key=lambda r: r.batch_qps)
    return max(results, key=lambda r: (r.recall_at_1, r.batch_qps))


def run_hnswlib(
    bench: Bench, target: float, efs: list[int], m: int, ef_construction: int
) -> tuple[Result, list[Result]]:
    import hnswlib

    n, dim = bench.xb.shape
    index = hnswlib.Index(space="ip", dim=dim)
    t0 = time.perf_counter()
    index.init_index(max_elements=n, M=m, ef_construction=ef_construction)
    index.add_items(bench.xb, np.arange(n), num_threads=2)
    build = time.perf_counter() - t0
    logger.info("hnswlib built in %.0f s", build)
    sweep = []
    for ef in efs:
        index.set_ef(max(ef, FETCH))

        def fn(q: F32) -> I64:
            labels, _ = index.knn_query(q, k=FETCH, num_threads=2 if len(q) > 1 else 1)
            out: I64 = labels.astype(np.int64)
            return out

        res = bench.measure("hnswlib", {"M": m, "ef_construction": ef_construction, "ef": ef}, fn)
        res.build_s = build
        res.bytes_per_vector = (dim * 4 + m * 2 * 4 + 8 + 16) * 1.0  # data, level-0 links, label
        sweep.append(res)
    return _pick(sweep, target), sweep


def run_usearch(
    bench: Bench, target: float, efs: list[int], m: int, ef_construction: int, dtype: str
) -> tuple[Result, list[Result]]:
    from usearch.index import Index

    n, dim = bench.xb.shape
    index = Index(ndim=dim, metric="ip", dtype=dtype, connectivity=m, expansion_add=ef_construction)
    t0 = time.perf_counter()
    index.add(np.arange(n), bench.xb, threads=2)
    build = time.perf_counter() - t0
    logger.info("usearch (%s) built in %.0f s", dtype, build)
    sweep = []
    for ef in efs:
        index.expansion_search = max(ef, FETCH)

        def fn(q: F32) -> I64:
            keys = index.search(q, FETCH, threads=2 if len(q) > 1 else 1).keys
            return np.asarray(keys).reshape(len(q), -1).astype(np.int64)

        res = bench.measure(
            "usearch",
            {
                "dtype": dtype,
                "connectivity": m,
                "expansion_add": ef_construction,
                "expansion_search": ef,
            },
            fn,
        )
        res.build_s = build
        res.bytes_per_vector = index.memory_usage / n
        sweep.append(res)
    return _pick(sweep, target), sweep


def run_faiss_sweep(bench: Bench, configs: list[tuple[str, list[int], int]]) -> list[Result]:
    """Other FAISS index kinds, each with exact re-ranking of ``rerank`` candidates
    from the full-precision vectors (none for IVF-Flat, whose scores are exact)."""
    out = []
    n, dim = bench.xb.shape
    rng = np.random.default_rng(7)
    for factory, nprobes, rerank in configs:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        if not index.is_trained:
            nlist = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 1
            sample = bench.xb[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))]
            index.train(sample)
        index.add(bench.xb)
        build = time.perf_counter() - t0
        nbytes = faiss.serialize_index(index).nbytes / n
        logger.info("sweep %s built in %.0f s, %.0f B/vector", factory, build, nbytes)
        for nprobe in nprobes:
            if "HNSW" in factory and "IVF" not in factory:
                params: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
                params.efSearch = nprobe
            else:
                params = faiss.SearchParametersIVF()
                params.nprobe = nprobe
                if "_HNSW" in factory:  # the coarse HNSW must look at least nprobe deep
                    qp = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
                    qp.efSearch = 2 * nprobe
                    params.quantizer_params = qp
            depth = max(rerank, FETCH)

            def fn(
                q: F32,
                index: Any = index,
                depth: int = depth,
                params: Any = params,
                rerank: int = rerank,
            ) -> I64:
                _, found = index.search(q, depth, params=params)
                cand: I64 = found.astype(np.int64)
                if rerank == 0:
                    return cand[:, :FETCH]
                exact = np.einsum("nrd,nd->nr", bench.xb[np.maximum(cand, 0)], q)
                exact[cand < 0] = -np.inf
                order = np.argsort(-exact, axis=1)[:, :FETCH]
                return np.take_along_axis(cand, order, axis=1)

            knob = "efSearch" if "HNSW" in factory and "IVF" not in factory else "nprobe"
            res = bench.measure(
                "sweep", {"index": factory, knob: nprobe, "rerank": rerank}, fn, single_n=300
            )
            res.build_s = build
            res.bytes_per_vector = nbytes
            out.append(res)
        del index
    return out


# -- report --------------------------------------------------------------------------------
COLUMNS = (
    "recall_at_1",
    "recall_at_10",
    "p50_ms_single",
    "p99_ms_single",
    "p99_ms_single_2clients",
    "batch_qps",
    "bytes_per_vector",
    "build_s",
)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Matching benchmark, size {report['size']} ({report['config']['templates']:,} "
        f"templates, {report['config']['dim']}-d)",
        "",
        f"Run {report['started_at']} on {report['machine']['cpu']} "
        f"({report['machine']['logical_cpus']} CPUs), faiss {report['machine']['faiss']}, "
        f"hnswlib {report['machine']['hnswlib']}, usearch {report['machine']['usearch']}.",
        "",
        "| system | " + " | ".join(COLUMNS) + " | params |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    rows = [(name, m) for name, m in report["systems"].items()]
    rows += [("sweep", m) for m in report["sweep"]]
    for name, m in rows:
        cells = []
        for c in COLUMNS:
            v = m.get(c)
            cells.append(
                f"{v:,.4f}"
                if isinstance(v, float) and c.startswith("recall")
                else f"{v:,.2f}"
                if isinstance(v, float) and "ms" in c
                else f"{v:,.0f}"
                if isinstance(v, (int, float))
                else ""
            )
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | `{json.dumps(m.get('params', {}))}` |"
        )
    lines += ["", "Ratios (same run):", ""]
    for k, v in report["ratios"].items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_matching",
        description="Benchmark Lantern's gallery against raw FAISS, exact search, hnswlib "
        "and usearch on seeded synthetic face templates.",
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="S",
        help="S=100k, M=1M, L=5M templates (default S)",
    )
    parser.add_argument("--dim", type=int, default=512, choices=(128, 512))
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--no-sweep", action="store_true", help="skip the FAISS index sweep")
    parser.add_argument("--no-anchors", action="store_true", help="skip hnswlib and usearch")
    parser.add_argument("--single", type=int, default=1000, help="single-query samples")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--workdir", type=Path, help="where to keep the temporary vector files (default: $TMPDIR)"
    )
    parser.add_argument(
        "--hnsw-m", type=int, default=16, help="hnswlib M / usearch connectivity (default 16)"
    )
    parser.add_argument(
        "--hnsw-ef-construction", type=int, default=100, help="build-time ef (default 100)"
    )
    parser.add_argument(
        "--hnsw-ef",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[64, 128, 256, 512, 1024],
        help="search-time ef values to sweep, comma-separated (default 64,...,1024)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    templates = SIZES[args.size]
    n_mated, n_nonmated = QUERIES[args.size]
    data = SyntheticFaces(
        dim=args.dim,
        n_persons=templates // 2,
        templates_per_person=2,
        n_mated=n_mated,
        n_nonmated=n_nonmated,
        seed=args.seed,
    )
    machine = machine_info()
    config = {
        "size": args.size,
        "templates": templates,
        "persons": data.n_persons,
        "dim": args.dim,
        "mated_queries": n_mated,
        "nonmated_queries": n_nonmated,
        "k": K,
        "noise": [data.noise_low, data.noise_high],
        "seed": args.seed,
        "batch": 256,
        "single_query_samples": args.single,
    }
    for key, value in {**machine, **config}.items():
        logger.info("%s: %s", key, value)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    work = tempfile.TemporaryDirectory(prefix="lantern-bench-", dir=args.workdir)
    # The vectors live in a file, memory-mapped: page cache the kernel may evict, so
    # size L (10 GB of vectors) leaves room for the systems under test.
    xb = np.lib.format.open_memmap(
        Path(work.name) / "xb.npy", mode="w+", dtype=np.float32, shape=(templates, args.dim)
    )
    for tids, _, vectors in data.iter_gallery(65_536):
        xb[tids[0] : tids[0] + len(tids)] = vectors
    xb.flush()
    logger.info("data generated in %.0f s", time.perf_counter() - t0)
    bench = Bench(data, xb, args.single)

    systems: dict[str, Result] = {}
    systems["exact"] = run_exact(bench)
    policy = IndexPolicy()
    lantern, gallery = run_lantern(bench, policy, Path(work.name))
    systems["lantern"] = lantern
    systems["faiss-raw"] = run_faiss_raw(bench, gallery)
    del gallery
    target = lantern.recall_at_1
    anchor_sweeps: list[Result] = []
    if not args.no_anchors:
        efs = args.hnsw_ef
        systems["hnswlib"], sw = run_hnswlib(
            bench, target, efs, m=args.hnsw_m, ef_construction=args.hnsw_ef_construction
        )
        anchor_sweeps += sw
        systems["usearch"], sw = run_usearch(
            bench,
            target,
            efs,
            m=args.hnsw_m,
            ef_construction=args.hnsw_ef_construction,
            dtype="f32",
        )
        anchor_sweeps += sw
    sweep: list[Result] = []
    if not args.no_sweep:
        plan = policy.plan(templates, args.dim)
        nlist = plan.nlist or 1024
        m = plan.pq_m or args.dim // 8
        base = [plan.nprobe // 2, plan.nprobe, plan.nprobe * 2] if plan.nprobe else [32, 64, 128]
        configs = [
            (f"IVF{nlist},Flat", base[:2], 0),
            (f"IVF{nlist},SQ8", base[:2], 32),
            (f"IVF{nlist},PQ{m}x4fs", base, 32),
            (f"IVF{nlist},PQ{m // 2}x4fs", base[1:2], 64),
            (f"IVF{nlist // 2},PQ{m}x4fs", [b // 2 for b in base[:2]], 32),
            (f"IVF{nlist}_HNSW32,PQ{m}x4fs", base[1:2], 32),
        ]
        if templates <= 100_000:  # a FAISS HNSW build takes over half an hour at 1M
            configs.append(("HNSW32,SQ8", [32, 64, 128], 32))
        sweep = run_faiss_sweep(bench, configs)

    lt, raw = systems["lantern"], systems["faiss-raw"]
    ratios: dict[str, Any] = {
        "lantern_vs_faiss_raw_batch_qps": round(lt.batch_qps / raw.batch_qps, 3),
        "lantern_vs_faiss_raw_p50_single": round(lt.p50_ms_single / raw.p50_ms_single, 3),
        "lantern_vs_exact_batch_qps": round(lt.batch_qps / systems["exact"].batch_qps, 1),
    }
    for anchor in ("hnswlib", "usearch"):
        if anchor in systems:
            ratios[f"lantern_vs_{anchor}_batch_qps"] = round(
                lt.batch_qps / systems[anchor].batch_qps, 3
            )
    report = {
        "benchmark": "matching",
        "size": args.size,
        "started_at": started,
        "duration_s": round(time.perf_counter() - t0, 1),
        "machine": machine,
        "config": config,
        "systems": {name: {**r.as_dict(), "params": r.params} for name, r in systems.items()},
        "ratios": ratios,
        "anchor_sweeps": [
            {"name": r.name, **r.as_dict(), "params": r.params} for r in anchor_sweeps
        ],
        "sweep": [{**r.as_dict(), "params": r.params} for r in sweep],
        "targets_1M_512d": {
            "recall_at_1": 0.995,
            "p99_ms_single": 5.0,
            "batch_qps": 2000,
            "bytes_per_vector": 600,
            "overhead_vs_faiss_raw": 0.10,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = args.size if args.dim == 512 else f"{args.size}_{args.dim}"
    outputs = [RESULTS / f"matching_{suffix}.json"] + ([args.json] if args.json else [])
    for path in outputs:
        path.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (RESULTS / f"matching_{suffix}.md").write_text(md)
    print(md)
    logger.info("wrote %s", ", ".join(str(p) for p in outputs))
    work.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
