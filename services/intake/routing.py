"""Which model reads an image: fundus or anterior segment.

Rules, first match wins: per-source configuration (calling AE title, then station name), then
the acquisition device type and the anatomic region coded in the data set, then the configured
default. An image no rule routes is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.kernel.errors import NoRoute
from services.kernel.settings import Settings

# Code meanings (lower case) that identify the route; codes differ between SNOMED releases
# and vendors, the meanings are stable enough to match on.
_FUNDUS_WORDS = ("retina", "fundus", "optic disc", "optic nerve", "macula")
_ANTERIOR_WORDS = ("cornea", "conjunctiva", "anterior", "slit", "sclera", "iris", "lens", "eyelid")
FUNDUS_REGION_CODES = {"5665001", "T-AA610", "65784005"}  # retina; fundus of eye
ANTERIOR_REGION_CODES = {"28726007", "T-AA200", "29445007", "T-AA860"}  # cornea; conjunctiva


@dataclass(frozen=True)
class RoutingFacts:
    """What the gateway read from the association and the data set."""

    calling_ae: str = ""
    station_name: str = ""
    device_type: tuple[tuple[str, str], ...] = ()  # (code value, code meaning)
    anatomic_region: tuple[tuple[str, str], ...] = ()
    sop_class_uid: str = ""


@dataclass(frozen=True)
class Router:
    """Decides which model reads an image from what the gateway knows of it."""

    by_ae: Mapping[str, str] = field(default_factory=dict)
    by_station: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        """A router from the configured sources, stations and default route."""
        return cls(settings.routes_by_ae, settings.station_routes, settings.default_route)

    def route(self, facts: RoutingFacts) -> str:
        """The route of an image; raises ``NoRoute`` rather than guess."""
        for key, table in ((facts.calling_ae, self.by_ae), (facts.station_name, self.by_station)):
            if key and key.strip() in table:
                return table[key.strip()]
        for codes in (facts.device_type, facts.anatomic_region):
            found = _route_from_codes(codes)
            if found:
                return found
        if self.default:
            return self.default
        raise NoRoute(
            "cannot tell fundus from anterior segment: configure the source's AE title or send "
            "Anatomic Region / Acquisition Device Type codes"
        )


def _route_from_codes(codes: Iterable[tuple[str, str]]) -> str | None:
    for value, meaning in codes:
        text = meaning.lower()
        if value in FUNDUS_REGION_CODES or any(w in text for w in _FUNDUS_WORDS):
            return "fundus"
        if value in ANTERIOR_REGION_CODES or any(w in text for w in _ANTERIOR_WORDS):
            return "anterior"
    return None
