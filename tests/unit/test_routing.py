import pytest

from services.intake.routing import Router, RoutingFacts
from services.kernel.errors import NoRoute


def test_configured_source_wins_over_attributes() -> None:
    router = Router(by_ae={"SLITLAMP": "anterior"})
    facts = RoutingFacts(calling_ae="SLITLAMP", anatomic_region=(("5665001", "Retina"),))
    assert router.route(facts) == "anterior"


def test_attributes_route_when_no_source_matches() -> None:
    router = Router()
    assert router.route(RoutingFacts(anatomic_region=(("5665001", "Retina"),))) == "fundus"
    assert router.route(RoutingFacts(anatomic_region=(("28726007", "Cornea"),))) == "anterior"
    assert router.route(RoutingFacts(device_type=(("X", "Slit lamp"),))) == "anterior"


def test_no_route_is_refused_not_guessed() -> None:
    with pytest.raises(NoRoute):
        Router().route(RoutingFacts(calling_ae="UNKNOWN"))
    assert Router(default="fundus").route(RoutingFacts()) == "fundus"
