"""The psana2-smalldata oracle (tests/smalldata_oracle.py) on a hand-made run whose expected
datasets and values are written out literally here (rules: docs/smalldata-h5.md)."""
import pathlib
import sys

import h5py
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import smalldata_oracle as oracle  # noqa: E402

NAN = np.nan
IMG = np.array([[1, 2], [3, 4]], dtype=np.float32)
EVENTS = [
    [  # SRV rank 0 -> run_part0.h5
        {"timestamp": 1, "a": {"b": 1.5}, "n": 7},
        {"timestamp": 3, "n": 8},                      # a/b missing -> NaN
        {"timestamp": 5, "a": {"b": 2.5}, "late": 9},  # n missing -> -99999; late first seen here
    ],
    [  # SRV rank 1 -> run_part1.h5 (never has `late`)
        {"timestamp": 2, "a": {"b": 0.5}, "n": 1, "img": IMG},
        {"timestamp": 4, "n": 2},                      # a/b -> NaN, img -> all NaN
    ],
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("smd")
    out = oracle.write_expected(str(d), "run.h5", EVENTS, summaries={"total": np.array([15])})
    return d, out


def test_files(run):
    d, out = run
    assert out["parts"] == [str(d / "run_part0.h5"), str(d / "run_part1.h5")]
    assert out["joined"] == str(d / "run.h5")


def test_part_file(run):
    d, _ = run
    with h5py.File(d / "run_part0.h5", "r") as f:
        assert sorted(f) == ["a", "late", "n", "timestamp"]  # nested key -> group a
        assert isinstance(f["a"], h5py.Group)
        n = f["n"]
        assert not n.is_virtual and n.dtype == np.int64 and n.maxshape == (None,) and n.chunks == (1000,)
        assert f["timestamp"][()].tolist() == [1, 3, 5]
        assert f["n"][()].tolist() == [7, 8, -99999]
        np.testing.assert_array_equal(f["a/b"][()], [1.5, NAN, 2.5])
        assert f["late"][()].tolist() == [0, 0, 9]  # rows before first appearance: 0
        assert "total" not in f
    with h5py.File(d / "run_part1.h5", "r") as f:
        assert f["img"].dtype == np.float32 and f["img"].maxshape == (None, 2, 2)
        np.testing.assert_array_equal(f["img"][()], [IMG, np.full((2, 2), NAN)])


def test_joined_file(run):
    d, _ = run
    with h5py.File(d / "run.h5", "r") as f:
        for k in ("timestamp", "n", "a/b", "late", "img"):
            assert f[k].is_virtual, k
            assert f[k].shape[0] == 5, k  # all rows of both parts
        assert f["timestamp"][()].tolist() == [1, 3, 5, 2, 4]  # part order, not sorted
        assert f["n"][()].tolist() == [7, 8, -99999, 1, 2]
        np.testing.assert_array_equal(f["a/b"][()], [1.5, NAN, 2.5, 0.5, NAN])
        assert f["late"][()].tolist() == [0, 0, 9, -99999, -99999]  # part1 lacks it: fill value
        np.testing.assert_array_equal(f["img"][()], [np.full((2, 2), NAN)] * 3 + [IMG, np.full((2, 2), NAN)])
        src = [(m.file_name.rsplit("/", 1)[-1], m.dset_name, m.vspace.get_select_bounds())
               for m in f["a/b"].virtual_sources()]
        assert src == [("run_part0.h5", "/a/b", ((0,), (2,))), ("run_part1.h5", "/a/b", ((3,), (4,)))]
        assert not f["total"].is_virtual and f["total"][()].tolist() == [15]
        assert not f.attrs and not f["n"].attrs


def test_compare_same_and_different(run, tmp_path):
    d, out = run
    for p in out["parts"] + [out["joined"]]:
        assert oracle.compare(p, p) == []
    got = tmp_path / "run.h5"  # same values, but ordinary datasets and a NaN where 0 belongs
    with h5py.File(out["joined"], "r") as src, h5py.File(got, "w") as dst:
        for k in ("timestamp", "n", "a/b", "img", "total"):
            dst[k] = src[k][()]
        dst["late"] = np.array([-99999, -99999, 9, -99999, -99999])
    diffs = oracle.compare(out["joined"], str(got))
    assert any("/n: expected virtual dataset, got ordinary" in x for x in diffs), diffs
    assert any(x.startswith("/late: values differ") for x in diffs), diffs
    assert not any(x.startswith("/timestamp: values") for x in diffs), diffs
