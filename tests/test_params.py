import pytest

from segret_lib.params import MAX_CONCEPTS, ParamError, SegretParams, split_concepts


def test_defaults_follow_method():
    p = SegretParams()
    assert (p.seg_weight, p.ret_weight, p.step_size, p.last_step) == (1.0, 1.0, 20.0, 0)
    assert (p.threshold_mode, p.threshold, p.smooth_kernel, p.smooth_sigma) == ("fraction", 0.5, 3, 0.5)
    assert (p.iterative, p.iterative_max, p.softmax_temperature, p.token_combine) == (False, 20, 100.0, "mean")
    assert p.hires is False


def test_split_concepts():
    assert split_concepts(" cat ,  traffic   light,,dog, Cat") == ("cat", "traffic light", "dog")
    assert split_concepts(["a", " b "]) == ("a", "b")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"enabled": True, "concepts": ""}, "no concept words"),
        ({"enabled": True, "concepts": ",".join(f"w{i}" for i in range(MAX_CONCEPTS + 1))}, "at most"),
        ({"seg_weight": -1}, "seg_weight"),
        ({"ret_weight": 1e9}, "ret_weight"),
        ({"step_size": float("nan")}, "step_size"),
        ({"step_size": "inf"}, "step_size"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold_mode": "median"}, "threshold_mode"),
        ({"last_step": -3}, "last_step"),
        ({"last_step": 2.5}, "last_step"),
        ({"smooth_kernel": 4}, "smooth_kernel"),
        ({"iterative_steps": "1,x"}, "iterative steps"),
        ({"enabled": True, "concepts": "a,b", "seg_weight": 0, "ret_weight": 0}, "both loss weights"),
        ({"enabled": "maybe"}, "enabled"),
        ({"colour": 1}, "unknown A-STAR setting"),
    ],
)
def test_bad_values_raise_clear_errors(changes, needle):
    with pytest.raises(ParamError, match=needle):
        SegretParams.create(**changes)


def test_create_coerces_ui_strings():
    p = SegretParams.create(enabled="true", concepts="cat, dog", seg_weight="1.5", last_step="25.0",
                            iterative_steps="0, 10;20", threshold_mode="Otsu")
    assert p.enabled is True and p.concepts == ("cat", "dog") and p.seg_weight == 1.5
    assert p.last_step == 25 and p.iterative_steps == (0, 10, 20) and p.threshold_mode == "otsu"


def test_disabled_params_need_no_concepts():
    assert SegretParams.create(enabled=False, concepts="").concepts == ()


@pytest.mark.parametrize(
    "p",
    [
        SegretParams(enabled=True, concepts=("cat", "traffic light")),
        SegretParams(enabled=True, concepts=("a", "b", "c"), seg_weight=0.5, ret_weight=2.0, step_size=12.5,
                     last_step=25, threshold_mode="otsu", iterative=True, iterative_steps=(0, 5),
                     iterative_target=0.3, iterative_max=7, hires=True),
    ],
)
def test_infotext_round_trip(p):
    info = p.to_infotext()
    assert all(isinstance(v, str) for v in info.values())
    back = SegretParams.from_infotext(info)
    for name in ("enabled", "concepts", "seg_weight", "ret_weight", "step_size", "last_step", "threshold_mode",
                 "iterative", "iterative_steps", "iterative_target", "iterative_max", "hires"):
        assert getattr(back, name) == getattr(p, name), name
    if p.threshold_mode == "fraction":
        assert back.threshold == p.threshold


def test_from_infotext_without_keys_is_disabled():
    assert SegretParams.from_infotext({"Steps": "20"}).enabled is False
