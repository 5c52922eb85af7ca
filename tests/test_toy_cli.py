"""The video commands on the shipped checkpoints: generate, eval, train (tiny configs), and the shipped files."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from minianimate.toy.models import CHECKPOINTS


def run(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "minianimate", *args], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def fails(*args):
    return subprocess.run([sys.executable, "-m", "minianimate", *args], capture_output=True, text=True)


@pytest.mark.parametrize("suffix", [".gif", ".png", ".mp4"])
def test_generate_writes_the_animation(tmp_path, suffix):
    out = tmp_path / f"clip{suffix}"
    stdout = run("generate", "--prompt", "a red circle moving left", "--model", "pastel", "--frames", "4",
                 "--steps", "2", "--out", str(out))
    assert out.stat().st_size > 0 and "4 frames" in stdout


def test_generate_long_clip_with_context_and_motion_lora(tmp_path):
    out = tmp_path / "long.gif"
    run("generate", "--prompt", "a blue square", "--frames", "40", "--context", "16", "--steps", "1",
        "--motion-lora", "zoom-in:0.8", "--out", str(out))
    from PIL import Image

    assert Image.open(out).n_frames == 40


def test_generate_more_than_16_frames_needs_no_context_option(tmp_path):
    out = tmp_path / "long.gif"
    run("generate", "--prompt", "a red circle moving right", "--frames", "20", "--steps", "1", "--out", str(out))
    from PIL import Image

    assert Image.open(out).n_frames == 20


def test_generate_bad_output_suffix_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minianimate", "generate", "--prompt", "a red circle", "--out",
                             str(tmp_path / "x.avi")], capture_output=True, text=True)
    assert result.returncode != 0 and ".mp4, .gif or .png" in result.stderr


def test_eval_prints_the_table(tmp_path):
    stdout = run("eval", "--per-row", "1", "--steps", "2", "--json", str(tmp_path / "t.json"))
    stored = json.loads((tmp_path / "t.json").read_text())
    rows = stored["rows"]
    assert stored["provenance"]["checkpoints"]  # the sha256 of what it read
    assert [r["row"] for r in rows][:2] == ["base, trained prompts", "base, held-out prompts"]
    assert "direction" in stdout and "watermark" in stdout


@pytest.mark.parametrize("stage", ["adapter", "motion", "motion-lora", "controlnet"])
def test_train_video_stages_run_and_export(tmp_path, stage):
    out = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINTS, out)
    extra = {"adapter": "clips: 4\nframes: 2\n", "motion": "clips: 4\nframes: 8\ncheck: false\n",
             "motion-lora": "references: 4\nframes: 8\nrank: 2\n", "controlnet": "images: 8\ncheck: 2\n"}[stage]
    config = tmp_path / "cfg.yaml"
    config.write_text(f"steps: 2\nbatch: 2\ncheckpoint_every: 2\n{extra}")
    run("train", stage, "--config", str(config), "--out", str(out), cwd=tmp_path)
    exported = {"adapter": out / "domain_adapter.safetensors", "motion": out / "motion_module.safetensors",
                "motion-lora": out / "motion_loras" / "zoom-in.safetensors",
                "controlnet": out / "controlnet" / "diffusion_pytorch_model.safetensors"}[stage]
    assert exported.stat().st_mtime > (CHECKPOINTS / "motion_module.safetensors").stat().st_mtime
    assert (tmp_path / "runs" / f"{stage}-cfg" / "weights.safetensors").exists()  # runs/<stage>-<config stem>
    log = json.loads((out / "training_log.json").read_text())
    assert any(key.startswith(stage) for key in log)


def test_shipped_motion_module_is_official_and_loads_as_a_diffusers_motion_adapter(tmp_path):
    from diffusers import MotionAdapter
    from safetensors.torch import load_file

    from minianimate.motion_io import detect_motion_format, save_motion_module
    from minianimate.toy.models import load_motion_unet

    state = load_file(CHECKPOINTS / "motion_module.safetensors")
    assert detect_motion_format(state) == "official"
    model = load_motion_unet()
    save_motion_module(model, tmp_path / "adapter", "diffusers")
    adapter = MotionAdapter.from_pretrained(tmp_path / "adapter", local_files_only=True)
    ours = model.motion_state_dict()
    theirs = adapter.state_dict()  # MotionAdapter keys are UNetMotionModel's motion-module keys
    assert len(theirs) == len(ours)
    for key, value in ours.items():
        assert torch.equal(theirs[key], value), key


def test_shipped_motion_loras_are_small_and_official():
    from safetensors.torch import load_file

    size = (CHECKPOINTS / "motion_module.safetensors").stat().st_size
    for name in ("zoom-in", "zoom-out"):
        path = CHECKPOINTS / "motion_loras" / f"{name}.safetensors"
        assert path.stat().st_size <= size / 10
        assert all(".processor.to_" in k for k in load_file(path))


def test_plug_and_play_swaps_only_spatial_weights():
    from minianimate.toy.models import load_personalized, load_pipeline

    pipe = load_pipeline()
    motion = {k: v.clone() for k, v in pipe.unet.motion_state_dict().items()}
    base = {k: v.clone() for k, v in pipe.unet.spatial_state_dict().items()}
    for model in ("outlined", "pastel"):
        load_personalized(pipe, model)
        assert all(torch.equal(v, motion[k]) for k, v in pipe.unet.motion_state_dict().items())
        assert any(not torch.equal(v, base[k]) for k, v in pipe.unet.spatial_state_dict().items())
    pipe.load_personalized("base")
    assert all(torch.equal(v, base[k]) for k, v in pipe.unet.spatial_state_dict().items())
    video = pipe.generate("a red circle moving left", frames=4, steps=2, progress=False)
    assert video.shape == (4, 64, 64, 3) and video.dtype == np.uint8


def test_convert_takes_the_shipped_motion_module_to_diffusers_and_back(tmp_path):
    from diffusers import MotionAdapter
    from safetensors.torch import load_file

    from minianimate.motion_io import official_to_diffusers
    from minianimate.toy.models import CHECKPOINTS, FILES

    shipped = CHECKPOINTS / FILES["motion"]
    run("convert", str(shipped), str(tmp_path / "adapter"), "--to", "diffusers", "--groups", "16")
    adapter = MotionAdapter.from_pretrained(tmp_path / "adapter")  # diffusers reads it
    assert adapter.config.motion_num_attention_heads == 4  # from motion_module.json beside the shipped file
    again = tmp_path / "again.safetensors"
    run("convert", str(tmp_path / "adapter"), str(again), "--to", "official")
    original, back = load_file(shipped), load_file(again)
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    assert {official_to_diffusers(k) for k in original} == set(adapter.state_dict()) - {
        k for k in adapter.state_dict() if k.endswith(".pe")}
    result = fails("convert", str(shipped), str(tmp_path / "adapter"), "--to", "diffusers")
    assert result.returncode == 2 and "exists; remove it or add --overwrite" in result.stderr


def test_a_device_this_machine_lacks_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = fails("generate", "--prompt", "a red circle moving left", "--device", "cuda", "--out", "x.gif")
    assert result.returncode == 2 and "no CUDA GPU; use --device cpu" in result.stderr


def test_generate_with_a_control_video_resized_and_spread_over_the_frames(tmp_path):
    from minianimate.toy import shapeworld as sw
    from minianimate.video_io import write_gif

    centres = np.stack([np.linspace(10, 50, 24), np.full(24, 32.0)], 1)
    big = np.repeat(np.repeat(sw.silhouette("circle", centres, 18), 2, axis=1), 2, axis=2)  # 128x128, 24 frames
    write_gif(tmp_path / "control.gif", big)
    run("generate", "--prompt", "a red circle", "--frames", "8", "--steps", "2", "--control",
        str(tmp_path / "control.gif"), "--control-scale", "0.8", "--out", str(tmp_path / "clip.gif"))
    assert (tmp_path / "clip.gif").exists()
    short = fails("generate", "--prompt", "a red circle", "--frames", "32", "--control", str(tmp_path / "control.gif"),
                  "--out", str(tmp_path / "x.gif"))
    assert short.returncode == 2 and "has 24 frames for --frames 32" in short.stderr


def test_generate_with_prompt_travel_free_init_and_a_looped_schedule(tmp_path):
    run("generate", "--prompt-travel", "0:a red circle moving left|5:a blue circle moving left", "--frames", "8",
        "--steps", "2", "--free-init", "1", "--context", "4", "--context-schedule", "looped",
        "--out", str(tmp_path / "travel.gif"))
    assert (tmp_path / "travel.gif").exists()
    late = fails("generate", "--prompt-travel", "0:a red circle|9:a blue circle", "--frames", "8", "--out", "x.gif")
    assert late.returncode == 2 and "keyframes [0, 9] must lie in 0..7" in late.stderr
    both = fails("generate", "--prompt", "a red circle", "--prompt-travel", "0:a red circle", "--out", "x.gif")
    assert both.returncode == 2 and "not allowed with" in both.stderr
