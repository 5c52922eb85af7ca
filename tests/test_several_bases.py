"""The several-bases lever: training-only looks, their LoRAs (`train look`), and a motion stage that draws one base a
step, attaches that base's LoRA alone and takes its batch from that base's clips."""
import json
import shutil

import numpy as np
import pytest
import torch

from minianimate.lora import SPATIAL_ATTENTION, LoRA
from minianimate.toy import bases, metrics
from minianimate.toy import shapeworld as sw
from minianimate.toy.datasets import clip_set, image_set
from minianimate.toy.models import CHECKPOINTS, FILES, load_motion_unet


@pytest.mark.parametrize("look", sorted(sw.LOOKS))
def test_a_look_draws_its_background_kind_and_shades_and_keeps_the_colour_name(look):
    spec = sw.LOOKS[look]
    images, captions = image_set(40, 3, look=look)
    kinds = [sw.background_kind(image[0, 0]) for image in images]
    assert kinds.count(spec["kind"]) >= 30, kinds  # a dull coloured background may read as grey
    for image, caption in zip(images, captions):
        frame = image.reshape(-1, 3).astype(float)
        shape = np.median(frame[np.abs(frame - frame[0]).sum(1) > 60], 0)
        assert metrics._hue_name(shape) == caption.split()[1]
        value = shape.max() / 255  # HSV value of the shape's colour: the look's shades
        assert spec["value"][0] - 0.06 <= value <= spec["value"][1] + 0.06
    clips, clip_captions = clip_set(6, 3, frames=4, watermark=False, look=look)
    assert len(clip_captions) == 6 and all((clip[:, :2, :2] == clip[0, 0, 0]).all() for clip in clips)
    with pytest.raises(ValueError, match="unknown look 'chalk'"):
        image_set(2, 0, look="chalk")


def test_without_a_look_the_images_are_drawn_as_before():
    a, _ = image_set(6, 11, moving=0.5)
    b, _ = image_set(6, 11, moving=0.5, look=None)
    rng = np.random.default_rng(11)  # the draw order before looks existed: moving?, direction, then the image
    before = []
    for _ in range(6):
        direction = str(rng.choice(sw.DIRECTIONS)) if rng.random() < 0.5 else None
        before.append(sw.render_image(rng, direction=direction)[0])
    assert np.array_equal(a, b) and np.array_equal(a, np.stack(before))


def _look_files(root, looks):
    """Tiny nonzero LoRAs for `looks` in root/looks/ (the stage's `train look` makes real ones)."""
    unet = load_motion_unet(root)
    for i, look in enumerate(looks):
        lora = LoRA.inject(unet, SPATIAL_ATTENTION, rank=2, name=look)
        with torch.no_grad():
            for p in lora.parameters():
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(i))
        lora.save(root / FILES["looks"] / f"{look}.safetensors")
        lora.detach()


def test_each_step_attaches_one_base_alone_and_draws_its_clips(tmp_path):
    root = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS, root)
    _look_files(root, ["ink", "neon"])
    unet = load_motion_unet(root)
    data = {None: (torch.zeros(2, 4, 4, 16, 16), ["a"] * 2), "ink": (torch.ones(2, 4, 4, 16, 16), ["b"] * 2),
            "neon": (torch.full((2, 4, 4, 16, 16), 2.0), ["c"] * 2)}
    several = bases.SeveralBases(unet, root, data, seed=0)
    assert not any(lora.enabled for lora in several.loras.values())
    picks = []
    for step in range(60):
        latents, captions = several(step)
        pick = {"a": None, "b": "ink", "c": "neon"}[captions[0]]
        assert [look for look, lora in several.loras.items() if lora.enabled] == ([pick] if pick else [])
        assert latents is data[pick][0]
        picks.append(captions[0])
    assert {picks.count(k) for k in "abc"} <= set(range(12, 29))  # each about a third
    assert picks == [several(step)[1][0] for step in reversed(range(60))][::-1]  # from the step alone
    several.off()
    assert not any(lora.enabled for lora in several.loras.values())
    with pytest.raises(FileNotFoundError, match="train look --config configs/wide/look_ink.yaml"):
        bases.SeveralBases(unet, tmp_path, data, seed=0)
    with pytest.raises(ValueError, match="unknown look 'chalk'"):
        bases.parse("ink, chalk")
    with pytest.raises(ValueError, match="bases and adapter_mix"):
        bases.parse("ink", adapter_mix=True)
    assert bases.parse(None) == [] and bases.parse("ink, neon") == ["ink", "neon"]


def test_train_look_writes_the_variant_and_the_motion_stage_trains_across_it_and_resumes(tmp_path):
    from minianimate.toy.stages import LookStage, MotionStage, run_stage, train_motion

    root = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS, root)
    run_stage("look", LookStage(look="neon", steps=2, batch=2, images=2, rank=2, checkpoint_every=2), root,
              progress=False, run=tmp_path / "look")
    assert (root / FILES["looks"] / "neon.safetensors").exists()
    log = json.loads((root / "training_log.json").read_text())
    assert log["look neon"]["steps"] == 2
    assert any("looks/neon.safetensors" in f for f in json.dumps(log["provenance"]["by_section"]["look neon"]).split('"'))
    cfg = MotionStage(steps=2, batch=2, clips=2, frames=4, checkpoint_every=1, check=False, bases="neon",
                      bases_clips=2, watermark=False)
    seen = []

    def on_check(trainer, unet, adapter):
        seen.append(trainer.step)
        return {}

    _, trainer, history, clips = train_motion(cfg, root, tmp_path / "run", False, False, on_check=on_check)
    assert trainer.step == 2 and seen == [1, 2] and clips == 2
    _, trainer, _, _ = train_motion(MotionStage(**{**cfg.__dict__, "steps": 3}), root, tmp_path / "run", True, False)
    assert trainer.step == 3
    with pytest.raises(ValueError, match="unknown look"):
        train_motion(MotionStage(**{**cfg.__dict__, "bases": "chalk"}), root, tmp_path / "run3", False, False)
