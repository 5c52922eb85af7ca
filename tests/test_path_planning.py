"""Long clips' path planning (issue 46): each window drawn again until the pipeline's planner accepts it."""
import numpy as np

from minianimate.context import context_windows
from minianimate.toy import shapeworld as sw
from minianimate.toy.inference import plan_path

from test_pipeline import pipe  # noqa: F401  (the tiny random pipeline fixture)

KW = dict(frames=18, steps=1, seed=0, progress=False)  # max_frames 8 here: windows of 8 (overlap 4), one after another
WINDOWS = context_windows(18, 8, 4)


def test_each_window_is_drawn_again_until_the_planner_accepts_it_and_its_best_draw_is_kept(pipe):  # noqa: F811
    calls, answers = [], {}

    def planner(prompt, clip, idx, frames, known):
        calls.append((prompt, clip.shape, list(idx), frames, known.tolist()))
        return answers.get(len(calls), len(calls) - 100.0)  # refuse unless told otherwise, later draws scored higher

    pipe.planner = planner
    try:
        plain = pipe.generate("a red circle moving left", candidates=1, **KW)
        assert calls == []
        answers.update({i: 0.0 for i in range(1, 10)})  # every first draw accepted: the plain clip, one call a window
        assert np.array_equal(pipe.generate("a red circle moving left", candidates=3, **KW), plain)
        assert [c[2] for c in calls] == WINDOWS and calls[0][:2] == ("a red circle moving left", (8, 64, 64, 3))
        assert calls[0][4] == [False] * 8 and calls[1][4] == [True] * 4 + [False] * 4
        calls.clear(), answers.clear()
        redrawn = pipe.generate("a red circle moving left", candidates=3, **KW)  # refused: 3 draws, the last kept
        assert [c[2] for c in calls] == [w for w in WINDOWS for _ in range(3)] and not np.array_equal(redrawn, plain)
        calls.clear()
        answers.update({2: 0.0, 4: 0.0, 6: 0.0, 8: 0.0})  # the second draw of each window accepted
        pipe.generate("a red circle moving left", candidates=3, **KW)
        assert [c[2] for c in calls] == [w for w in WINDOWS for _ in range(2)]
        calls.clear(), answers.clear()
        pipe.generate({0: "a red circle moving left", 9: "a blue circle moving left"}, candidates=3, **KW)
        pipe.generate("a red circle moving left", context=8, context_schedule="uniform", candidates=3, **KW)
        assert calls == []  # prompt travel and side-by-side windows: no planning
    finally:
        pipe.planner = None


def _clip(direction, x, frames=16, speed=0.8):  # a red circle whose first frame's centre is at x px
    c = sw.render_clip(np.random.default_rng(0), frames, "red", "circle", direction, watermark=False,
                       speed_range=(speed, speed))[0]
    return np.roll(c, int(x - np.nonzero(c[0].max(-1).max(0) > 100)[0].mean()), axis=2)


def test_plan_path_accepts_a_first_window_moving_the_prompted_way_with_room_for_the_whole_path():
    first, none = list(range(16)), np.zeros(16, bool)  # the first window of a 48-frame clip: its path starts left
    prompt = "a red circle moving right"
    assert plan_path(prompt, _clip("right", 14), first, 48, none) >= 0
    at_edge, wrong_way = plan_path(prompt, _clip("right", 44), first, 48, none), plan_path(
        prompt, _clip("left", 20), first, 48, none)
    assert wrong_way < at_edge < 0
    assert plan_path(prompt, _clip("right", 26), list(range(16, 32)), 48, none) >= 0  # a middle window: centred
    assert plan_path("a red circle", _clip("still", 50), first, 48, none) >= 0  # still: anywhere
    assert plan_path("not a shapeworld caption", _clip("left", 20), first, 48, none) == 0


def test_plan_path_judges_a_later_window_by_the_frames_it_makes():
    moving = _clip("right", 14, frames=32)
    stalled = np.concatenate([moving[:8], np.repeat(moving[7:8], 8, axis=0)])  # moves, then stops where it was
    known = np.array([True] * 8 + [False] * 8)
    assert plan_path("a red circle moving right", moving[:16], list(range(8, 24)), 48, known) >= 0
    assert plan_path("a red circle moving right", stalled, list(range(8, 24)), 48, known) < 0
