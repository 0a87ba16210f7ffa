"""Two models' referrals of the same eyes compared as paired data."""

from pathlib import Path

import numpy as np
import pytest

from ml.data import Sample
from ml.paired_referral import compare, markdown, read_referrals, write_referrals


def _samples(n: int) -> list[Sample]:
    return [
        Sample(Path(f"/somewhere/{i}.jpg"), f"p{i // 2}", ("right", "left")[i % 2], frozenset())
        for i in range(n)
    ]


def _written(tmp_path: Path, name: str, diseased: list[int], referred: list[int]) -> Path:
    path = tmp_path / f"{name}.csv"
    n = len(diseased)
    write_referrals(
        path, _samples(n), np.array(diseased, bool), np.array(referred, bool), np.zeros(n, bool)
    )
    return path


def test_discordant_eyes_and_patients_are_counted_per_outcome(tmp_path: Path) -> None:
    # eyes 0-3 diseased (patients p0, p1), 4-7 healthy (p2, p3)
    diseased = [1, 1, 1, 1, 0, 0, 0, 0]
    new = _written(tmp_path, "new", diseased, [1, 1, 1, 0, 0, 0, 1, 0])
    old = _written(tmp_path, "old", diseased, [1, 0, 0, 0, 1, 1, 1, 1])
    result = compare(read_referrals(new), read_referrals(old))
    eyes = result["pooled"]["eye (eyes as independent)"]
    assert eyes["sensitivity"] | {"low": 0, "high": 0, "mcnemar_exact_p": 0} == {
        "n": 4, "this": 0.75, "other": 0.25, "difference": 0.5, "only_this": 2,
        "only_other": 0, "low": 0, "high": 0, "mcnemar_exact_p": 0,
    }  # fmt: skip
    assert eyes["sensitivity"]["mcnemar_exact_p"] == pytest.approx(0.5)  # 2 of 2 discordant
    assert eyes["specificity"]["only_this"] == 3 and eyes["specificity"]["only_other"] == 0
    assert eyes["sensitivity"]["low"] < 0.5 < eyes["sensitivity"]["high"]
    patients = result["pooled"]["patient"]
    # p0 and p1 referred by both (new: eyes 0,1 and 2; old: eye 0 only -> p0; p1 missed)
    assert patients["sensitivity"]["this"] == 1.0 and patients["sensitivity"]["other"] == 0.5
    # p2: new refers none, old refers both; p3: both refer eye 6
    assert patients["specificity"]["this"] == 0.5 and patients["specificity"]["other"] == 0.0
    text = markdown(result, "new", "old")
    assert "| all | eye (eyes as independent) | 0.750 vs 0.250: +0.500" in text


def test_evaluations_of_different_photographs_are_refused(tmp_path: Path) -> None:
    one = _written(tmp_path, "one", [1, 0], [1, 0])
    three = _written(tmp_path, "three", [1, 0, 0], [1, 0, 0])
    with pytest.raises(ValueError, match="not of the same photographs"):
        compare(read_referrals(one), read_referrals(three))
    relabelled = _written(tmp_path, "relabelled", [0, 0], [1, 0])
    with pytest.raises(ValueError, match="label the same photographs differently"):
        compare(read_referrals(one), read_referrals(relabelled))


def test_the_file_names_no_folder_of_this_machine(tmp_path: Path) -> None:
    text = _written(tmp_path, "x", [1], [1]).read_text()
    assert "/somewhere" not in text and "0.jpg" in text
    # a manifest without an eye column: the sample's eye is its file, folder and all
    unnamed = Sample(Path("/somewhere/else/7.png"), "p7", "/somewhere/else/7.png", frozenset())
    path = tmp_path / "unnamed.csv"
    write_referrals(path, [unnamed], np.ones(1, bool), np.ones(1, bool), np.zeros(1, bool))
    assert "/somewhere" not in path.read_text()
    assert read_referrals(path).keys == [("", "p7", "", "7.png")]
