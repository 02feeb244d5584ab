"""A pipeline request as a graph of stages per model, and the priority each stage runs at.

Per model (archai's shape: a host step, then device steps that wait for it)::

    quantize (host-only) -> bench int8 -> accuracy int8
    bench fp32 -> accuracy fp32

With ``order = "quicker-better"`` the int8 bench also waits for the fp32 bench and the int8
accuracy for the fp32 accuracy, so their priorities can come from those results: quicker models
first, and among equally quick ones the more accurate (archai's "quicker, better models first").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from backends.core.records import JobSettings, Model, Result

QUANTIZE, BENCH, ACCURACY = "quantize", "bench", "accuracy"
FP32, INT8 = "fp32", "int8"
ORDERS = ("fifo", "quicker-better")
SCHEMES = ("ort-qdq",)  # snpe encodings feed --quantization-overrides jobs, not a new model
PRIORITY_CAP = 10**9  # a priority from a latency in microseconds never exceeds this


class StageState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (StageState.DONE, StageState.FAILED)


@dataclass
class PipelineRequest:
    """What ``devlab pipeline`` asks for: models, one device, the sets and the bench settings."""

    models: list[Model]
    device_id: str
    calibration: str
    accuracy_set: str
    scheme: str = "ort-qdq"
    bits: int = 8
    runtime: str | None = None
    settings: JobSettings = field(default_factory=JobSettings)  # the bench stages'
    priority: int = 0
    order: str = "fifo"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(
                f"pipeline --scheme {self.scheme!r}: only {', '.join(SCHEMES)} makes a model the "
                "int8 stages can run; for SNPE encodings use devlab quantize --scheme snpe"
            )
        if self.order not in ORDERS:
            raise ValueError(f"--order {self.order!r}: choose from {', '.join(ORDERS)}")


@dataclass
class Stage:
    """One step of one model's pipeline, and where and how it ran."""

    id: str  # "<model>/<kind>[:<variant>]", unique in the request
    model: str  # the model's name
    kind: str  # QUANTIZE, BENCH or ACCURACY
    variant: str  # FP32 or INT8 (quantize: INT8, what it makes)
    needs: tuple[str, ...] = ()
    priority: int = 0
    state: StageState = StageState.PENDING
    job_id: str | None = None  # the Lab job of a device stage
    host: str | None = None  # the lab host it ran on (the last attempt's)
    attempts: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # earlier attempts and where they ended
    artifact: str | None = None  # quantize: the model it wrote (this machine's copy)

    @property
    def label(self) -> str:
        """How messages name it: ``quantize``, ``bench fp32``, ``accuracy int8``."""
        return self.kind if self.kind == QUANTIZE else f"{self.kind} {self.variant}"

    @property
    def host_only(self) -> bool:
        return self.kind == QUANTIZE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["needs"] = list(self.needs)
        return data


def stage_id(model: str, kind: str, variant: str | None = None) -> str:
    return f"{model}/{kind}" if variant is None else f"{model}/{kind}:{variant}"


def build_stages(request: PipelineRequest) -> list[Stage]:
    """Every stage of every model, dependencies first (ValueError for a repeated name)."""
    names = [model.name for model in request.models]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"two models are named {', '.join(repeated)}: a pipeline names its stages after "
            "the models, so give each its own file name"
        )
    quicker = request.order == "quicker-better"
    stages: list[Stage] = []
    for name in names:
        quantize = stage_id(name, QUANTIZE)
        bench = {v: stage_id(name, BENCH, v) for v in (FP32, INT8)}
        accuracy = {v: stage_id(name, ACCURACY, v) for v in (FP32, INT8)}
        base = request.priority
        stages += [
            Stage(quantize, name, QUANTIZE, INT8, priority=base),
            Stage(bench[FP32], name, BENCH, FP32, priority=base),
            Stage(
                bench[INT8],
                name,
                BENCH,
                INT8,
                (quantize, bench[FP32]) if quicker else (quantize,),
                priority=base,
            ),
            Stage(accuracy[FP32], name, ACCURACY, FP32, (bench[FP32],), priority=base),
            Stage(
                accuracy[INT8],
                name,
                ACCURACY,
                INT8,
                (bench[INT8], accuracy[FP32]) if quicker else (bench[INT8],),
                priority=base,
            ),
        ]
    return stages


def dependants(stages: Sequence[Stage], failed: str) -> list[Stage]:
    """Every stage that waits, directly or not, on stage ``failed``."""
    found: dict[str, Stage] = {}
    frontier = {failed}
    while frontier:
        nxt = {s.id for s in stages if set(s.needs) & frontier and s.id not in found}
        for stage in stages:
            if stage.id in nxt:
                found[stage.id] = stage
        frontier = nxt
    return list(found.values())


def latency_us(result: Result | None) -> float | None:
    """The figure to quote of a bench result (the headline, else the median)."""
    if result is None:
        return None
    return result.headline_us if result.headline_us is not None else result.stats.median


def top1(result: Result | None) -> float | None:
    return (result.accuracy or {}).get("top1") if result is not None else None


def stage_priority(
    stage: Stage, upstream: Mapping[str, Result | None], request: PipelineRequest
) -> int:
    """The priority ``stage`` is queued at (lower runs first). ``fifo``: the request's.
    ``quicker-better``: the request's plus the latency (us) of the bench this stage follows,
    scaled up by the fp32 model's top-1 error where it is known; quicker, better models first."""
    if request.order != "quicker-better" or stage.host_only:
        return request.priority
    by_kind = {key.rsplit("/", 1)[1]: result for key, result in upstream.items()}
    fp32_bench = by_kind.get(f"{BENCH}:{FP32}")
    own_bench = by_kind.get(f"{BENCH}:{stage.variant}")
    latency = latency_us(own_bench if stage.kind == ACCURACY else fp32_bench)
    if latency is None:
        return request.priority
    accuracy = top1(by_kind.get(f"{ACCURACY}:{FP32}"))
    penalty = 1.0 if accuracy is None else 2.0 - accuracy
    return request.priority + min(PRIORITY_CAP, int(round(latency * penalty)))


ACCURACY_RUNS = 5  # an accuracy stage times a few runs only: its bench stage has the latency


def accuracy_settings(request: PipelineRequest) -> JobSettings:
    """The accuracy stages' job settings: the evaluation set, and the shortest timing."""
    return replace(
        request.settings,
        accuracy_set=request.accuracy_set,
        warmup=1,
        runs=ACCURACY_RUNS,
        min_seconds=None,
        rounds=1,
        precision_pct=0.0,
        skip_canary=True,
        skip_parity=True,
        per_layer=False,
        power=False,
    )


def bench_settings(request: PipelineRequest) -> JobSettings:
    """The bench stages' job settings: the request's, without an evaluation set."""
    return replace(request.settings, accuracy_set=None)
