"""Long clips' path planning (issue 46): the first window drawn several times, the pipeline's planner keeps one."""
import numpy as np

from minianimate.toy import shapeworld as sw
from minianimate.toy.inference import plan_path

from test_pipeline import pipe  # noqa: F401  (the tiny random pipeline fixture)

KW = dict(frames=18, steps=1, seed=0, progress=False)  # max_frames 8 here: windows of 8, one after another


def test_the_planner_sees_every_candidate_of_the_first_window_once_and_its_choice_is_kept(pipe):  # noqa: F811
    calls = []

    def planner(prompt, clips, idx, frames):
        calls.append((prompt, clips.shape, list(idx), frames))
        return pick

    pipe.planner = planner
    try:
        pick = 0  # candidate 0 is the unplanned clip's own first window: nothing else changes
        plain = pipe.generate("a red circle moving left", candidates=1, **KW)
        assert calls == []
        assert np.array_equal(pipe.generate("a red circle moving left", candidates=3, **KW), plain)
        assert calls == [("a red circle moving left", (3, 8, 64, 64, 3), list(range(8)), 18)]
        pick = 2
        other = pipe.generate(["a red circle moving left", "a blue square"], candidates=3, **KW)
        assert [c[0] for c in calls[1:]] == ["a red circle moving left", "a blue square"]
        assert not np.array_equal(other[0], plain)
        calls.clear()
        pipe.generate({0: "a red circle moving left", 9: "a blue circle moving left"}, candidates=3, **KW)
        pipe.generate("a red circle moving left", context=8, context_schedule="uniform", candidates=3, **KW)
        assert calls == []  # prompt travel and side-by-side windows: no planning
    finally:
        pipe.planner = None


def test_plan_path_keeps_the_candidate_moving_the_prompted_way_with_room_for_the_whole_path():
    rng = np.random.default_rng(0)

    def clip(direction, x):  # 16 frames of a red circle starting at x px, moving at 0.8 px/frame
        c = sw.render_clip(rng, 16, "red", "circle", direction, watermark=False, speed_range=(0.8, 0.8))[0]
        shift = int(x - np.nonzero(c[0].max(-1).max(0) > 100)[0].mean())
        return np.roll(c, shift, axis=2)

    # the middle window (frames 16-31) of a 48-frame clip: the path's middle should be at the frame's middle
    wrong_way, at_edge, centred = clip("left", 30), clip("right", 50), clip("right", 26)
    idx = list(range(16, 32))
    assert plan_path("a red circle moving right", np.stack([wrong_way, at_edge, centred]), idx, 48) == 2
    # the first window of a 48-frame clip: the path starts left of the middle
    assert plan_path("a red circle moving right", np.stack([centred, clip("right", 14)]), list(range(16)), 48) == 1
    assert plan_path("a red circle", np.stack([centred, clip("still", 30)]), idx, 48) == 1
    assert plan_path("not a shapeworld caption", np.stack([centred]), idx, 48) == 0
