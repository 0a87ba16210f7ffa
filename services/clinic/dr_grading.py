"""Diabetic retinopathy grading schemes, beside the taxonomy: what diabetic eye screening
graders record per eye, where a site turns it on (off by default).

- ``icdr``: the International Clinical DR scale (none, mild, moderate or severe NPDR, PDR) and
  diabetic macular oedema (absent, present).
- ``nhs``: the English screening programme's R0-R3, M0-M1 and P (laser scars seen).

A grade is stored with the eye's read (``CaseRead.eyes[eye]["dr"]``), shown to the panel and
exported with the analysis set. An ungradable eye has none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class DrGradeError(ValueError):
    """A DR grade that the site's scheme does not allow (the message says which)."""


@dataclass(frozen=True)
class Scale:
    field: str  # key in the stored grade and in the form: eye_R_dr_<field>
    label: str
    values: tuple[tuple[str, str], ...]  # (stored value, what the grader reads)


@dataclass(frozen=True)
class Scheme:
    name: str
    title: str
    scales: tuple[Scale, ...]
    photocoagulation: bool  # a "P" (laser scars) box

    def describe(self, grade: Mapping[str, Any]) -> str:
        """A stored grade as graders write it: "moderate NPDR, DME absent" or "R1 M0 P"."""
        parts = [dict(s.values).get(str(grade.get(s.field, "")), "") for s in self.scales]
        if self.photocoagulation and grade.get("photocoagulation"):
            parts.append("P")
        return (", " if self.name == "icdr" else " ").join(p for p in parts if p)


SCHEMES: dict[str, Scheme] = {
    "icdr": Scheme(
        "icdr",
        "ICDR",
        (
            Scale(
                "retinopathy",
                "Retinopathy",
                (
                    ("none", "no apparent DR"),
                    ("mild", "mild NPDR"),
                    ("moderate", "moderate NPDR"),
                    ("severe", "severe NPDR"),
                    ("pdr", "PDR"),
                ),
            ),
            Scale(
                "maculopathy",
                "Macular oedema",
                (("absent", "DME absent"), ("present", "DME present")),
            ),
        ),
        photocoagulation=False,
    ),
    "nhs": Scheme(
        "nhs",
        "NHS DESP",
        (
            Scale(
                "retinopathy",
                "Retinopathy",
                (("R0", "R0"), ("R1", "R1"), ("R2", "R2"), ("R3A", "R3A"), ("R3S", "R3S")),
            ),
            Scale("maculopathy", "Maculopathy", (("M0", "M0"), ("M1", "M1"))),
        ),
        photocoagulation=True,
    ),
}


def scheme_named(name: str | None) -> Scheme | None:
    if not name:
        return None
    try:
        return SCHEMES[name]
    except KeyError:
        raise DrGradeError(f"no DR grading scheme {name!r}: {', '.join(SCHEMES)}") from None


def check_grade(scheme: Scheme | None, given: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The canonical stored grade (scheme, one value per scale, P) or None when nothing was
    given; every scale must be given once any is."""
    values = {k: v for k, v in (given or {}).items() if v not in (None, "", False)}
    values.pop("scheme", None)
    if not values:
        return None
    if scheme is None:
        raise DrGradeError("DR grading is not used at this site")
    grade: dict[str, Any] = {"scheme": scheme.name}
    for scale in scheme.scales:
        value = str(values.pop(scale.field, ""))
        if value not in dict(scale.values):
            choices = ", ".join(v for v, _ in scale.values)
            raise DrGradeError(f"{scheme.title} {scale.label.lower()}: one of {choices}")
        grade[scale.field] = value
    if scheme.photocoagulation:
        grade["photocoagulation"] = bool(values.pop("photocoagulation", False))
    if values:
        raise DrGradeError(f"{scheme.title} has no {', '.join(sorted(values))}")
    return grade


def describe(grade: Mapping[str, Any] | None) -> str:
    """A stored grade in words, whatever scheme it was recorded under ("" for none)."""
    if not grade:
        return ""
    scheme = SCHEMES.get(str(grade.get("scheme")))
    return scheme.describe(grade) if scheme else ""
