import pytest

from segret_lib.settings.params import (
    AAE_TARGETS,
    AAE_THRESHOLDS,
    ASTAR_STEP_SIZE,
    MAX_CONCEPTS,
    METHOD_LABELS,
    UI_FIELDS,
    ParamError,
    SegretParams,
    split_concepts,
)
from segret_lib.ui.script_args import params_from_args, switch_method


def test_defaults_follow_method():
    p = SegretParams()
    assert (p.seg_weight, p.ret_weight, p.step_size, p.last_step) == (1.0, 1.0, ASTAR_STEP_SIZE, 0)
    assert p.step_rule == "early"
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


# ------------------------------------------------------------------------------------------------- method
def test_method_names_and_defaults():
    for name in ("aae", "Attend-and-Excite", "attend_and_excite", "A&E"):
        p = SegretParams.create(enabled=True, concepts="cat", method=name)
        assert p.method == "aae"
        assert (p.iterative, p.iterative_steps, p.iterative_target, p.iterative_max) == (True, (), AAE_TARGETS, 20)
        assert tuple(round(1 - t, 6) for t in AAE_THRESHOLDS) == AAE_TARGETS
    assert SegretParams.create(method="A-STAR").method == "astar"
    both = SegretParams.create(enabled=True, concepts="cat, dog", method="Both")
    assert (both.method, both.iterative, both.iterative_steps, both.iterative_target) == ("both", False, (0, 10, 20),
                                                                                          (0.2,))
    # explicit values win over the method's defaults
    p = SegretParams.create(method="aae", iterative=False, iterative_target="0.9, 0.4", iterative_steps="2")
    assert (p.iterative, p.iterative_target, p.iterative_steps) == (False, (0.9, 0.4), (2,))
    assert SegretParams().method == "astar" and SegretParams().iterative_target == (0.2,)
    assert SegretParams(iterative_target=0.3).iterative_target == (0.3,)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [({"method": "excite"}, "method must be one of"),
     ({"iterative_target": "0.5, x"}, "iterative_target"),
     ({"iterative_target": ""}, "at least one"),
     ({"iterative_target": "0.2, -1"}, "iterative_target")],
)
def test_bad_method_values(changes, needle):
    with pytest.raises(ParamError, match=needle):
        SegretParams.create(**changes)


def test_aae_needs_no_a_star_weight():
    assert SegretParams.create(enabled=True, concepts="cat", method="aae", seg_weight=0, ret_weight=0).enabled
    with pytest.raises(ParamError, match="both loss weights"):
        SegretParams.create(enabled=True, concepts="cat", method="astar", seg_weight=0, ret_weight=0)
    # Both keeps its excite term; with that at 0 too there is nothing left
    assert SegretParams.create(enabled=True, concepts="cat", method="both", seg_weight=0, ret_weight=0).enabled
    with pytest.raises(ParamError, match="excite weights are all 0"):
        SegretParams.create(enabled=True, concepts="cat", method="both", seg_weight=0, ret_weight=0,
                            excite_weight=0)


def test_the_ui_and_api_default_method_is_both_and_old_infotexts_stay_a_star():
    """DEFAULT_METHOD: an API dict without a method gets Both at excite weight 0.25, and the UI starts with it;
    an infotext without a method (every A-STAR infotext, old or new) reads as A-STAR, and one of Both without the
    excite weight as weight 1 (the weight of every version before)."""
    from segret_lib.settings.params import BOTH_EXCITE_WEIGHT, DEFAULT_METHOD, SETTINGS

    assert DEFAULT_METHOD == "both"
    p = params_from_args([{"concepts": "cat, dog"}])
    assert p.method == "both" and p.excite_weight == BOTH_EXCITE_WEIGHT == 0.25
    assert params_from_args([{"concepts": "cat, dog", "method": "A-STAR"}]).method == "astar"
    assert SETTINGS.row("method").ui_value() == "Both" and SETTINGS.row("excite_weight").ui_value() == 0.25
    old_astar = {"A-STAR concepts": "cat, dog", "A-STAR step size": "10"}
    assert SegretParams.from_infotext(old_astar).method == "astar"
    old_both = {"A-STAR concepts": "cat, dog", "A-STAR method": "Both", "A-STAR step rule": "steady"}
    pasted = SegretParams.from_infotext(old_both)
    assert (pasted.method, pasted.excite_weight, pasted.step_rule) == ("both", 1.0, "steady")
    new_both = params_from_args([{"concepts": "cat, dog"}]).to_infotext()
    assert SegretParams.from_infotext(new_both) == params_from_args([{"concepts": "cat, dog"}])


@pytest.mark.parametrize(
    "p",
    [
        SegretParams.create(enabled=True, concepts="cat, dog", method="aae"),
        SegretParams.create(enabled=True, concepts="cat, dog", method="aae", iterative=False, last_step=10),
        SegretParams.create(enabled=True, concepts="cat, dog", method="aae", iterative_steps="1, 4",
                            iterative_target="0.9 0.3", iterative_max=5),
        SegretParams.create(enabled=True, concepts="cat, dog", method="both", iterative=True),
        SegretParams.create(enabled=True, concepts="cat, dog", method="both"),
    ],
)
def test_method_infotext_round_trip(p):
    info = p.to_infotext()
    assert info["A-STAR method"] == METHOD_LABELS[p.method]
    back = SegretParams.from_infotext(info)
    assert back == p


def test_a_star_infotext_is_unchanged_by_the_method_setting():
    info = SegretParams.create(enabled=True, concepts="cat, dog").to_infotext()
    assert "A-STAR method" not in info and "A-STAR iterative" not in info
    old = {"A-STAR concepts": "cat, dog", "A-STAR iterative": "steps 0 10 20; target 0.2; max 20"}
    back = SegretParams.from_infotext(old)
    assert back.method == "astar" and back.iterative_steps == (0, 10, 20) and back.iterative_target == (0.2,)
    aae_off = SegretParams.create(enabled=True, concepts="cat", method="aae", iterative=False).to_infotext()
    assert aae_off["A-STAR iterative"] == "off"
    assert SegretParams.create(enabled=True, concepts="c", method="aae").to_infotext()["A-STAR iterative"] == (
        "steps auto; target 0.95 0.5 0.2; max 20")


# ------------------------------------------------------------------------------------------------- script args
OLD_UI_VALUES = [True, "cat, dog", 1.0, 1.0, 20.0, 0, "fraction", 0.5, False, False, False, False]


def test_old_positional_lists_keep_their_meaning():
    assert UI_FIELDS[:12] == ("enabled", "concepts", "seg_weight", "ret_weight", "step_size", "last_step",
                              "threshold_mode", "threshold", "iterative", "show_maps", "hires", "low_vram")
    assert UI_FIELDS[12] == "method"
    assert UI_FIELDS[13:18] == ("layout", "layout_strength", "layout_exclusive", "maps_view", "step_rule")
    assert UI_FIELDS[18:] == ("bind_weight", "excite_weight")  # added after the step rule, at the end
    p = params_from_args(OLD_UI_VALUES)
    assert p.method == "astar" and p.iterative is False
    assert p.step_rule == "early" and p.step_size == 20.0  # no rule in the list: the method's ("auto")
    assert params_from_args([*OLD_UI_VALUES, "Attend-and-Excite"]).step_rule == "v1"
    assert params_from_args([*OLD_UI_VALUES, "A-STAR", "", 1.0, False, "overlay", "auto"]).step_rule == "early"
    assert params_from_args([*OLD_UI_VALUES, "A-STAR", "", 1.0, False, "overlay", "v1"]).step_rule == "v1"
    assert params_from_args([*OLD_UI_VALUES, "A-STAR", "", 1.0, False, "overlay", "balanced"]).step_rule == "balanced"
    p = params_from_args([*OLD_UI_VALUES, "Attend-and-Excite"])  # every UI value is explicit, iterative included
    assert p.method == "aae" and p.iterative is False and p.iterative_target == AAE_TARGETS


def test_api_dict_takes_only_the_keys_given_as_explicit():
    p = params_from_args([{"concepts": "cat, dog", "method": "Attend-and-Excite"}])
    assert p.method == "aae" and p.iterative is True and p.last_step == 0 and p.step_size == 20.0
    assert params_from_args([{"concepts": "cat, dog"}]).step_size == ASTAR_STEP_SIZE  # A-STAR's (calibrated) default
    assert params_from_args([{"concepts": "cat", "method": "aae", "step_size": 10}]).step_size == 10.0
    p = params_from_args([{"concepts": "cat, dog", "method": "aae", "iterative": False, "last_step": 30}])
    assert p.iterative is False and p.last_step == 30
    # an X/Y/Z override of the method: the dict's own keys still win, the others follow the new method
    p = params_from_args([{"concepts": "cat, dog"}], {"method": "aae"})
    assert p.method == "aae" and p.iterative is True
    p = params_from_args([{"concepts": "cat, dog", "iterative": False}], {"method": "aae"})
    assert p.iterative is False


def test_switching_the_method_keeps_values_the_user_changed():
    # UI values at A-STAR's default (iterative off): switching to A&E turns it on, and back off
    p = params_from_args(OLD_UI_VALUES, {"method": "Attend-and-Excite"})
    assert p.method == "aae" and p.iterative is True
    assert switch_method({"iterative": True}, "aae", "astar")["iterative"] is False
    # a value that differs from the previous method's default was set by the user: it stays
    assert switch_method({"iterative": True}, "astar", "both")["iterative"] is True
    assert switch_method({"iterative": False}, "aae", "both")["iterative"] is False
    assert switch_method({"iterative": False}, "aae", "aae")["iterative"] is False
    assert switch_method({"step_size": ASTAR_STEP_SIZE}, "astar", "aae")["step_size"] == 20.0
    assert switch_method({"step_size": "20"}, "aae", "both")["step_size"] == ASTAR_STEP_SIZE
    assert switch_method({"step_rule": "early"}, "astar", "aae")["step_rule"] == "v1"
    assert switch_method({"step_rule": "v1"}, "aae", "both")["step_rule"] == "early"
    assert switch_method({"step_rule": "steady"}, "astar", "aae")["step_rule"] == "steady"  # chosen: kept
    assert switch_method({"step_rule": "balanced"}, "astar", "aae")["step_rule"] == "balanced"  # chosen: kept
    assert switch_method({"step_size": 12.5}, "astar", "aae")["step_size"] == 12.5
    p = params_from_args([*OLD_UI_VALUES[:8], True, *OLD_UI_VALUES[9:]], {"method": "both"})
    assert p.method == "both" and p.iterative is True
    with pytest.raises(ParamError, match="method"):
        params_from_args(OLD_UI_VALUES, {"method": "nope"})
