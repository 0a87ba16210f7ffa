"""The study protocol the export is judged against: endpoints with their performance goals and
the test of each, prespecified and exploratory subgroups, the analysis unit and the sample-size
justification. Read from a TOML file (the study's registered protocol, or the default shipped
here); its SHA-256 goes into the snapshot so a reader knows which protocol the figures answer."""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scipy.stats import norm

DEFAULT = Path(__file__).with_name("protocol.toml")
MEASURES = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "auc")
UNGRADABLE = ("referral", "excluded")  # intention to diagnose, complete case
INTERVALS = ("cluster bootstrap percentile",)  # the confirmatory interval methods implemented
SUBGROUP_ATTRIBUTES = ("site", "model_version", "age_band", "sex", "camera", "route")


class ProtocolError(ValueError):
    """The protocol file cannot be used; the message names the field and what to write."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    kind: str  # primary or secondary
    reader: str
    target: str  # "referral" or a class code
    measure: str
    analysis: str  # "weighted" or "naive"
    goal: float
    bound: str  # "lower": the lower 95 % bound must exceed the goal; "upper": stay below
    # the protocol's handling of ungradable eyes where it applies (the referral's sensitivity
    # and specificity): "referral" (intention to diagnose) or "excluded"; "" elsewhere
    ungradable: str = ""

    @property
    def handles_ungradable(self) -> bool:
        return self.target == "referral" and self.measure in ("sensitivity", "specificity")


@dataclass(frozen=True)
class SampleSize:
    endpoint: str
    expected: float
    alpha: float
    power: float
    prevalence: float

    def positives_needed(self, goal: float) -> int:
        """Diseased units for a one-sided binomial test of the goal (normal approximation)."""
        za, zb = float(norm.ppf(1 - self.alpha)), float(norm.ppf(self.power))
        spread = za * math.sqrt(goal * (1 - goal)) + zb * math.sqrt(
            self.expected * (1 - self.expected)
        )
        return math.ceil((spread / (self.expected - goal)) ** 2)


@dataclass(frozen=True)
class Protocol:
    title: str
    version: str
    registration: str
    analysis_unit: str
    ungradable: str  # one prespecified handling for every endpoint it applies to
    endpoints: tuple[Endpoint, ...]
    prespecified: tuple[str, ...]
    exploratory: tuple[str, ...]
    sample_size: SampleSize | None
    sha256: str
    source: str
    # the confirmatory analysis: interval method, bootstrap replicates and seed
    interval: str = INTERVALS[0]
    replicates: int = 500
    seed: int = 20211

    def overridden(self, replicates: int, seed: int) -> list[str]:
        """How an analysis run with these replicates and seed departs from the protocol's."""
        return [
            f"{name} {used} (protocol: {planned})"
            for name, used, planned in (
                ("replicates", replicates, self.replicates),
                ("seed", seed, self.seed),
            )
            if used != planned
        ]


def load_protocol(path: Path | None = None) -> Protocol:
    """The protocol in ``path`` (the shipped default when None), checked field by field."""
    path = path or DEFAULT
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ProtocolError(f"cannot read the study protocol {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the study protocol {path} is not valid TOML: {exc}") from exc
    ungradable = data.get("ungradable", "referral")
    if ungradable not in UNGRADABLE:
        raise ProtocolError(f'{path}: ungradable is "referral" or "excluded", not {ungradable!r}')
    endpoints = tuple(_endpoint(i, e, ungradable) for i, e in enumerate(data.get("endpoints", [])))
    if not any(e.kind == "primary" for e in endpoints):
        raise ProtocolError(f'{path}: name at least one [[endpoints]] with kind = "primary"')
    subgroups = data.get("subgroups", {})
    prespecified = tuple(subgroups.get("prespecified", ()))
    exploratory = tuple(subgroups.get("exploratory", ()))
    for attribute in prespecified + exploratory:
        if attribute not in SUBGROUP_ATTRIBUTES:
            raise ProtocolError(
                f"{path}: subgroup {attribute!r} is not one of {', '.join(SUBGROUP_ATTRIBUTES)}"
            )
    unit = data.get("analysis_unit", "eye")
    if unit not in ("eye", "visit"):
        raise ProtocolError(f'{path}: analysis_unit is "eye" or "visit", not {unit!r}')
    size = data.get("sample_size")
    interval, replicates, seed = _analysis(path, data.get("analysis", {}))
    return Protocol(
        title=str(data.get("title", "")),
        version=str(data.get("version", "")),
        registration=str(data.get("registration", "")),
        analysis_unit=unit,
        ungradable=ungradable,
        endpoints=endpoints,
        prespecified=prespecified,
        exploratory=exploratory,
        sample_size=_sample_size(path, size, endpoints) if size else None,
        sha256=hashlib.sha256(raw).hexdigest(),
        source="default (shipped)" if path == DEFAULT else path.name,
        interval=interval,
        replicates=replicates,
        seed=seed,
    )


def _analysis(path: Path, raw: dict[str, Any]) -> tuple[str, int, int]:
    """The [analysis] table: interval method, bootstrap replicates, seed (defaults if absent)."""
    interval = str(raw.get("interval", INTERVALS[0]))
    if interval not in INTERVALS:
        raise ProtocolError(f"{path}: [analysis] interval is one of {', '.join(INTERVALS)}")
    replicates, seed = raw.get("replicates", 500), raw.get("seed", 20211)
    if not isinstance(replicates, int) or not isinstance(seed, int) or replicates < 100:
        raise ProtocolError(f"{path}: [analysis] replicates (>= 100) and seed are integers")
    return interval, replicates, seed


def _endpoint(number: int, raw: dict[str, Any], ungradable: str) -> Endpoint:
    where = f"endpoint {number + 1} ({raw.get('name', 'unnamed')})"
    if "ungradable" in raw:
        raise ProtocolError(
            f"{where}: the handling of ungradable eyes is the protocol's, one for every "
            "endpoint: write `ungradable = ...` once at the top of the file"
        )
    try:
        endpoint = Endpoint(
            name=str(raw["name"]),
            kind=str(raw.get("kind", "secondary")),
            reader=str(raw.get("reader", "model")),
            target=str(raw.get("target", "referral")),
            measure=str(raw["measure"]),
            analysis=str(raw.get("analysis", "weighted")),
            goal=float(raw["goal"]),
            bound=str(raw.get("bound", "lower")),
        )
    except KeyError as exc:
        raise ProtocolError(f"{where}: the field {exc.args[0]!r} is missing") from exc
    if endpoint.measure not in MEASURES:
        raise ProtocolError(f"{where}: measure is one of {', '.join(MEASURES)}")
    if endpoint.analysis not in ("weighted", "naive") or endpoint.bound not in ("lower", "upper"):
        raise ProtocolError(f"{where}: analysis is weighted or naive; bound is lower or upper")
    if endpoint.handles_ungradable:
        endpoint = replace(endpoint, ungradable=ungradable)
    if endpoint.kind not in ("primary", "secondary") or not 0 < endpoint.goal < 1:
        raise ProtocolError(f"{where}: kind is primary or secondary; goal lies in (0, 1)")
    return endpoint


def _sample_size(path: Path, raw: dict[str, Any], endpoints: tuple[Endpoint, ...]) -> SampleSize:
    try:
        size = SampleSize(
            endpoint=str(raw["endpoint"]),
            expected=float(raw["expected"]),
            alpha=float(raw.get("alpha", 0.025)),
            power=float(raw.get("power", 0.8)),
            prevalence=float(raw["prevalence"]),
        )
    except KeyError as exc:
        raise ProtocolError(f"{path}: [sample_size] needs {exc.args[0]!r}") from exc
    goal = next((e.goal for e in endpoints if e.name == size.endpoint), None)
    if goal is None:
        raise ProtocolError(f"{path}: [sample_size] endpoint {size.endpoint!r} is not named")
    if not goal < size.expected < 1 or not 0 < size.prevalence < 1:
        raise ProtocolError(
            f"{path}: [sample_size] needs goal < expected < 1, prevalence in (0, 1)"
        )
    return size
