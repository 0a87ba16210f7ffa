"""Which clinic a received photograph belongs to. One gateway serves several clinics: each
source (a camera's calling AE title, its IP address, or the Station Name it writes) is mapped
to a site; what no entry names goes to the installation's own site (``EYESCREEN_SITE``). The
site decides who may see the case in the web application and which site's settings apply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceSites:
    """Source -> site, looked up by calling AE title first, then Station Name, then address
    (the AE title is what an administrator configures on the camera; the address is the
    fallback for cameras that all call with the vendor's default title)."""

    default: str = ""
    by_source: Mapping[str, str] = field(default_factory=dict)

    def site_of(self, calling_ae: str = "", station_name: str = "", address: str = "") -> str:
        for key in (calling_ae.strip(), station_name.strip(), address.strip()):
            if key and key in self.by_source:
                return self.by_source[key]
        return self.default
