"""The personalized-model measurement (issue 24): every rate is ~100% on real ShapeWorld renders of each style,
each style is told from the others, and each figure measures what its name says on drawn masks and images."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from minianimate.toy import metrics, shapeworld as sw
from minianimate.toy.cli import main
from minianimate.toy.evaluation import (AIMS, looks_like, outline_width, personalized_figures,
                                         personalized_rates)
from minianimate.toy.models import CHECKPOINTS

torch.set_num_threads(1)
STYLES = (None, "outlined", "pastel")


def renders(style, per_prompt=20, seed=0):
    """Real images of `style`: every colour x shape, `per_prompt` each; (N, 64, 64, 3) and the targets."""
    rng = np.random.default_rng(seed)
    pairs = [(c, s) for c in sw.COLORS for s in sw.SHAPES] * per_prompt
    return np.stack([sw.render_image(rng, c, s, style)[0] for c, s in pairs]), pairs


def blur(images, radius):
    return np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(radius))) for x in images])


def disk(radius, width=None, color=(220, 40, 40), background=sw.BACKGROUND, centre=(32.0, 32.0)):
    """A (1, 64, 64, 3) image of a filled disk, or with `width` a ring, drawn with numpy (not shapeworld)."""
    y, x = np.mgrid[:64, :64] + 0.5
    r = np.hypot(x - centre[0], y - centre[1])
    mask = (r < radius) & (r >= radius - width if width else True)
    return np.where(mask[..., None], color, background).astype(np.uint8)[None]


@pytest.fixture(scope="module")
def real():
    """Figures and targets of real renders of each style, and the plain ones' clean-background reference."""
    out = {style: renders(style) for style in STYLES}
    figures = {style: personalized_figures(images) for style, (images, _) in out.items()}
    return figures, {style: pairs for style, (_, pairs) in out.items()}


@pytest.mark.parametrize("style", STYLES, ids=["plain", "outlined", "pastel"])
def test_real_renders_score_about_100_percent_on_every_rate(real, style):
    figures, targets = real
    reference = np.percentile(figures[None]["background_std"], 90)  # 0: a real background is flat
    rates = personalized_rates(figures[style], targets[style], style, reference)
    assert rates["color"] == rates["shape"] == rates["clean"] == 1.0, rates
    assert min(rates["style_by_shape"].values()) >= 0.95, rates  # outlined: a few small triangles have no hole
    assert rates["inside"] >= 0.93, rates  # real shapes may lie flush against the frame (about 4%)
    assert all(rates[key] >= aim for key, aim in AIMS.items()), rates


@pytest.mark.parametrize("style", STYLES, ids=["plain", "outlined", "pastel"])
def test_each_style_is_told_from_the_others(real, style):
    figures, _ = real
    for other in STYLES:
        if other != style:
            # a few outlined triangles are too small for their hole: those are filled triangles
            assert looks_like(figures[style], other).mean() <= 0.02, other


@pytest.mark.parametrize("style", STYLES, ids=["plain", "outlined", "pastel"])
def test_rates_survive_a_generated_image_s_blur(style):
    images, pairs = renders(style, per_prompt=2, seed=1)
    rates = personalized_rates(personalized_figures(blur(images, 0.7)), pairs, style, reference=2.0)
    assert min(rates[k] for k in ("color", "shape", "style", "clean")) >= 0.95, rates


@pytest.mark.parametrize("width", [2.0, 3.0, 4.0, 6.0])
def test_outline_width_reads_the_drawn_ring_width(width):
    ring = metrics.segment(disk(10.3, width))["ink"]
    assert outline_width(ring)[0] == pytest.approx(width, abs=0.4)


def test_a_filled_shape_has_no_hole_and_reads_as_its_inradius():
    figures = personalized_figures(disk(9.0))
    assert figures["hole_px"][0] == 0 and figures["outline_width"][0] == pytest.approx(9.0, abs=0.5)
    assert looks_like(figures, None)[0] and not looks_like(figures, "outlined")[0]


def test_outlined_needs_a_visible_hole_and_an_outline_of_3_to_4_px():
    assert looks_like(personalized_figures(disk(10, 3.5)), "outlined")[0]
    assert not looks_like(personalized_figures(disk(10, 7.0)), "outlined")[0]  # too thick
    assert not looks_like(personalized_figures(disk(10, 1.5)), "outlined")[0]  # too thin


def test_pastel_needs_a_light_background_and_a_pastel_colour():
    red, pastel_red = np.array(sw.COLORS["red"]), (np.array(sw.COLORS["red"]) + sw.PASTEL_WHITE) / 2
    assert looks_like(personalized_figures(disk(9, None, pastel_red, sw.PASTEL_BACKGROUND)),
                              "pastel")[0]
    assert not looks_like(personalized_figures(disk(9, None, red, sw.PASTEL_BACKGROUND)), "pastel")[0]
    assert not looks_like(personalized_figures(disk(9, None, pastel_red)), "pastel")[0]


def test_a_shape_cut_by_the_frame_is_not_inside():
    assert personalized_figures(disk(9, centre=(12.0, 32.0)))["inside"][0]  # 3 px from the edge
    assert not personalized_figures(disk(9, centre=(5.0, 32.0)))["inside"][0]  # cut
    assert not personalized_figures(np.full((1, 64, 64, 3), 15, np.uint8))["inside"][0]  # nothing drawn


def test_background_std_counts_the_background_and_not_the_shape():
    image = disk(9.0)
    shape = metrics.segment(image)["filled"][0]
    noise = np.random.default_rng(0).normal(0, 5, image.shape)
    noisy_shape = np.clip(image + noise * shape[None, ..., None], 0, 255).astype(np.uint8)
    noisy_background = np.clip(image + noise * ~shape[None, ..., None], 0, 255).astype(np.uint8)
    assert personalized_figures(noisy_shape)["background_std"][0] == 0
    assert personalized_figures(noisy_background)["background_std"][0] == pytest.approx(5, rel=0.1)


@pytest.mark.skipif(not (CHECKPOINTS / "unet_outlined").exists(), reason="shipped checkpoints not built")
def test_eval_personalized_prints_one_row_per_model_with_every_rate(tmp_path, capsys):
    import json

    assert main(["eval", "--personalized", "--seeds", "1", "--steps", "2", "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["base", "outlined", "pastel"] and all(r["n"] == 12 for r in rows)
    assert all(set(AIMS) <= set(r) and set(r["met"]) == set(AIMS) for r in rows)
    assert rows[0]["clean"] >= 0.9  # the base's 90th percentile is the reference
    assert "clean bg" in capsys.readouterr().out
