"""`python -m minianimate ablate NAME`: every arm trained through the library's stage, measured alike, one json.

The quick runs here shrink `ablations.QUICK` further (2 steps, 1 clip a row, DDIM 2): the same code paths, quicker."""
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from minianimate.inflation import MotionUNet
from minianimate.motion_module import PositionalEncoding
from minianimate.toy import ablations
from minianimate.toy.ablation_arms import Budget
from minianimate.toy.cli import main
from minianimate.toy.models import CHECKPOINTS, TOY_MOTION, TOY_UNET, load_pipeline
from minianimate.toy.provenance import sha256
from minianimate.toy.stages import MotionStage, motion_stage, run_stage
from minianimate.unet import UNet

ROWS = {"direction", "steady", "jerk", "displacement", "color", "leakage", "frame_difference", "real", "n"}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(ablations, "QUICK", Budget(steps=2, every=1, per_row=1, sampling=2, clips=2))


def data_samples() -> dict:
    """Every file under data_samples/ with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in CHECKPOINTS.parent.rglob("*") if p.is_file()}


def test_an_unknown_ablation_is_one_line_naming_every_ablation(capsys):
    assert main(["ablate", "adapter"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown ablation 'adapter'")
    assert all(name in err for name in ablations.ABLATIONS)


def test_quick_refuses_to_write_into_data_samples(capsys):
    assert main(["ablate", "speed", "--quick", "--out", str(ablations.RESULTS)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--quick" in err and not ablations.RESULTS.exists()


def test_quick_temporal_layer_trains_each_arm_through_stage_2_into_a_temporary_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = data_samples()
    assert main(["ablate", "temporal-layer", "--quick"]) == 0
    assert data_samples() == before  # nothing written under data_samples/
    [path] = tmp_path.glob("ablate-temporal-layer-*/temporal-layer.json")
    result = json.loads(path.read_text())
    assert result["command"] == "python -m minianimate ablate temporal-layer --quick" and result["complete"]
    assert result["budget"] == {"steps": 2, "every": 1, "per_row": 1, "sampling": 2, "clips": 2, "frames": 16,
                                "guidance": 7.5, "seed": 0}
    assert result["provenance"]["commit"] and "unet_base/config.json" in result["provenance"]["checkpoints"]
    module, conv, none = result["arms"]
    assert [module["config"]["temporal"], conv["config"]["temporal"]] == ["attention", "conv"]
    for arm in (module, conv):
        assert arm["steps"] == 2 and [point["step"] for point in arm["curve"]] == [1, 2]
        assert arm["rows"] == arm["curve"][-1]["rows"] and arm["minutes"]["train"] > 0
        assert arm["checkpoint"]["sha256"] == sha256(arm["checkpoint"]["file"])
    assert none["steps"] == 0 and not none["trained"]
    for arm in result["arms"]:
        assert set(arm["rows"]) == {"trained prompts", "held-out prompts"}
        assert ROWS <= set(arm["rows"]["trained prompts"])


def test_quick_motion_lora_arm_trains_through_stage_3_and_resume_keeps_finished_arms(tiny, tmp_path, monkeypatch):
    full = ablations.ABLATIONS["motion-lora-rank"]  # its first arm (zoom-in, rank 1) and the module without one
    monkeypatch.setitem(ablations.ABLATIONS, "motion-lora-rank", dataclasses.replace(full, arms=(full.arms[0],
                                                                                                  full.arms[-1])))
    assert main(["ablate", "motion-lora-rank", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "motion-lora-rank.json").read_text())
    lora, none = result["arms"]
    assert lora["arm"] == "zoom-in-rank1" and lora["rank"] == 1 and lora["steps"] == 2
    assert result["budget"]["frames"] == 8  # the MotionLoRA recipe's clips
    assert lora["file_bytes"] == Path(lora["checkpoint"]["file"]).stat().st_size
    assert set(lora["rows"]) == {"zoom-in"} and set(none["rows"]) == {"zoom-in", "zoom-out"}
    assert {"zoom", "color", "shape", "read", "n"} == set(lora["rows"]["zoom-in"])
    finished = (tmp_path / "runs" / "motion-lora-rank" / "zoom-in-rank1" / "result.json").stat().st_mtime_ns
    assert main(["ablate", "motion-lora-rank", "--quick", "--resume", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "runs" / "motion-lora-rank" / "zoom-in-rank1" / "result.json").stat().st_mtime_ns == finished
    assert json.loads((tmp_path / "motion-lora-rank.json").read_text())["arms"] == result["arms"]


def test_without_positional_encoding_the_motion_modules_add_no_frame_index():
    def encodings(**motion):
        unet = MotionUNet.from_unet(UNet(TOY_UNET), {**TOY_MOTION, **motion})
        return [m.pe for m in unet.modules() if isinstance(m, PositionalEncoding)]

    assert all(pe.abs().sum() > 0 for pe in encodings())
    assert all(not pe.any() for pe in encodings(positional=False)) and len(encodings(positional=False)) > 0


def test_a_motion_stage_on_scaled_linear_betas_is_generated_on_them(tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS, out)
    cfg = MotionStage(steps=1, batch=1, clips=1, frames=4, check=False, beta_schedule="scaled_linear",
                      positional=False)
    motion_stage(cfg, out, tmp_path / "run", False, False)
    pipe = load_pipeline(root=out)
    assert pipe.ddim.beta_schedule == "scaled_linear"
    assert not any(m.pe.any() for m in pipe.unet.modules() if isinstance(m, PositionalEncoding))


def test_an_unknown_beta_schedule_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(ValueError, match="beta_schedule must be one of linear, scaled_linear"):
        run_stage("motion", MotionStage(beta_schedule="cosine"), out=tmp_path / "ckpt", run=tmp_path / "run")


def test_every_ablation_names_its_arms_once_and_trains_them_for_one_budget():
    for name, ablation in ablations.ABLATIONS.items():
        names = [arm.name for arm in ablation.arms]
        assert len(set(names)) == len(names), name
        budget = ablations.budget_of(ablation, quick=False)
        configs = [ablations.arm_config(ablation, arm, budget, CHECKPOINTS) for arm in ablation.arms]
        assert {cfg.steps for cfg in configs} == {ablation.steps}, name
    assert ablations.ABLATIONS["temporal-layer"].steps == 3000
