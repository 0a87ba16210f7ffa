import json
from pathlib import Path

import pytest

from services.kernel.errors import TaxonomyError
from services.taxonomy.tree import load_taxonomy, parse_taxonomy


def test_shipped_trees_have_the_papers_classes() -> None:
    fundus = load_taxonomy("fundus")
    anterior = load_taxonomy("anterior")
    assert fundus.depth == anterior.depth == 2
    assert [n.name for n in anterior.level(1)] == [
        "Cataract",
        "Ocular surface disease",
        "Ocular neoplasm",
        "Normal surface",
    ]
    assert len(anterior.level(2)) == 9
    assert len(fundus.level(2)) == 9  # 8 of the paper + the cataract extension
    assert fundus.node("F.LENS.CAT").extension
    assert fundus.ancestors("F.VRD.MAC") == ["F.VRD"]
    assert fundus.parent_index(2)[fundus.level_codes(2).index("F.VRD.RVAS")] == 1


def test_a_third_level_is_data_only(tmp_path: Path) -> None:
    data = load_taxonomy("anterior").to_dict()
    data["nodes"].append(
        {"code": "A.OSD.CINF.FUNG", "name": "Fungal keratitis", "parent": "A.OSD.CINF"}
    )
    path = tmp_path / "deeper.json"
    path.write_text(json.dumps(data))
    tree = load_taxonomy(path)
    assert tree.depth == 3
    assert tree.level_codes(3) == ["A.OSD.CINF.FUNG"]
    assert tree.with_ancestors({"A.OSD.CINF.FUNG"}) == {"A.OSD.CINF.FUNG", "A.OSD.CINF", "A.OSD"}


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([{"code": "A", "parent": "X"}], "unknown parent 'X'"),
        ([{"code": "A", "parent": None}, {"code": "A", "parent": None}], "duplicate code 'A'"),
        ([{"code": "A", "parent": "B"}, {"code": "B", "parent": "A"}], "cycle"),
        ([], "non-empty"),
    ],
)
def test_invalid_trees_are_refused_with_a_reason(nodes: list[dict], message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        parse_taxonomy({"name": "t", "version": "1", "nodes": nodes})
