"""Bad inputs end in one line that names the problem, before any model loads, and change no checkpoint: the
command line (`error: ...`, exit status 2) and the Python API; damaged checkpoint files; run folders and
--resume; a training run killed between (or during) checkpoints resumes to the uninterrupted result."""
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minianimate.checkpoint import CheckpointError, read_state_dict, save_safetensors
from minianimate.toy import cli, datasets, models, stages
from minianimate.toy.models import CHECKPOINTS

CK = str(CHECKPOINTS)
TINY_VAE = "steps: 4\nbatch: 2\nwarmup: 1\ncheckpoint_every: 2\nlog_every: 1\npool: 8\ncrop: 16\n"


def digest(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def shipped_checkpoints_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory either
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and on a busy machine by far
    before = digest(CHECKPOINTS)
    yield
    torch.set_num_threads(threads)
    assert digest(CHECKPOINTS) == before


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading any model (or starting a stage) fails the test: arguments must be checked first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models.UNet, "from_pretrained", refuse)
    monkeypatch.setattr(models, "load_vae", refuse)
    for name, (_, kind) in list(stages.STAGES.items()):
        monkeypatch.setitem(stages.STAGES, name, (refuse, kind))


def fails(argv, capsys) -> str:
    """Run the CLI in-process; assert exit status 2 and exactly one line `error: ...` on stderr; return it."""
    capsys.readouterr()  # what ran before
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
    return err[0]


GEN = ["generate", "--prompt", "a red circle", "--out", "clip.gif"]
CLI_CASES = {
    "frames 0": (GEN + ["--frames", "0"], "--frames: must be >= 1, got 0"),
    "frames -3": (GEN + ["--frames", "-3"], "--frames: must be >= 1, got -3"),
    "frames two": (GEN + ["--frames", "two"], "--frames: expected a whole number"),
    "context beyond the positional encoding": (GEN + ["--frames", "40", "--context", "40"],
                                               "--context 40 is longer than the motion module's positional encoding"),
    "steps 0": (GEN + ["--steps", "0"], "--steps: must be >= 1 and <= 1000"),
    "guidance -1": (GEN + ["--guidance", "-1"], "--guidance: must be a finite number >= 0"),
    "guidance nan": (GEN + ["--guidance", "nan"], "--guidance: must be a finite number"),
    "context 0": (GEN + ["--context", "0"], "--context: must be >= 1"),
    "overlap without context": (GEN + ["--overlap", "2"], "--overlap 2 needs --context"),
    "overlap >= context": (GEN + ["--context", "8", "--overlap", "8"], "must be smaller than it"),
    "image LoRA as --motion-lora": (GEN + ["--motion-lora", f"{CK}/lora_pastel.safetensors"],
                                    "holds no LoRA on the motion modules (it looks like a minianimate LoRA)"),
    "motion module as --motion-lora": (GEN + ["--motion-lora", f"{CK}/motion_module.safetensors"],
                                       "it looks like an official AnimateDiff motion module"),
    "unknown MotionLoRA name": (GEN + ["--motion-lora", "zoom-sideways"], "known in"),
    "bad MotionLoRA scale": (GEN + ["--motion-lora", "zoom-in:big"], "expected NAME_OR_PATH[:SCALE]"),
    "MotionLoRA as --model": (GEN + ["--model", f"{CK}/motion_loras/zoom-in.safetensors"],
                              "pass it as --motion-lora"),
    "missing --model": (GEN + ["--model", "nope"], "model nope: not 'base', 'outlined', 'pastel'"),
    "prompt outside the vocabulary": (GEN[:2] + ["a purple hexagon"] + GEN[3:], "outside the toy vocabulary"),
    "bad suffix": (GEN[:-1] + ["clip.avi"], "--out must end in .mp4, .gif or .png"),
    "missing --checkpoints": (GEN + ["--checkpoints", "absent"], "absent does not exist: make it with `python -m "
                                                                 "minianimate train vae"),
    "sample-images n 0": (["sample-images", "--prompt", "a red circle", "--n", "0", "--out", "imgs"],
                          "--n: must be >= 1, got 0"),
    "sample-images guidance -1": (["sample-images", "--prompt", "a red circle", "--guidance", "-1", "--out", "i"],
                                  "--guidance: must be a finite number >= 0"),
    "sample-images LoRA file": (["sample-images", "--prompt", "a red circle", "--model",
                                 f"{CK}/lora_pastel.safetensors", "--out", "i"], "a diffusers UNet folder"),
    "eval per-row 0": (["eval", "--per-row", "0"], "--per-row: must be >= 1"),
    "eval --json folder": (["eval", "--json", "."], "is a folder"),
    "unknown command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "unknown stage": (["train", "nope", "--config", "x.yaml"], "unknown stage 'nope'"),
    "missing config": (["train", "vae", "--config", "nope.yaml"], "No such file or directory: 'nope.yaml'"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_a_bad_argument_in_one_line_before_loading_a_model(case, capsys, no_model_loads):
    argv, message = CLI_CASES[case]
    assert message in fails(argv, capsys)
    assert list(Path.cwd().iterdir()) == []


def config(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_CONFIGS = {"unknown key": ("lr_max: 0.1\n", "unknown key lr_max"), "zero steps": ("steps: 0\n", "steps must be >= 1"),
               "1e-3 is text in YAML": ("lr: 1e-3\n", "write 1.0e-3 or 0.001"),
               "not YAML": ("steps: [1\n", "not valid YAML"), "camera": ("camera: zoom-sideways\n", "camera must be one of"),
               "data folder": ("data: nowhere\n", "not a WebVid-layout folder"),
               "zoom under 1": ("zoom: 0.5\n", "zoom must be at least 1")}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_config_is_refused_naming_the_file_and_the_field(case, tmp_path, capsys, no_model_loads):
    text, message = BAD_CONFIGS[case]
    path = config(tmp_path, "bad.yaml", text)
    assert message in fails(["train", "motion-lora", "--config", path, "--out", tmp_path / "ck"], capsys)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        stages.run_stage("motion-lora", path, out=CHECKPOINTS)


@pytest.mark.parametrize("text,message", [("margin: 30\n", "margin must be below 21.00 px"),
                                          ("hole: 5\n", "hole must be below 3.80 px")])
def test_a_styled_image_pick_no_image_can_meet_is_refused_before_loading(text, message, tmp_path, capsys,
                                                                         no_model_loads):
    path = config(tmp_path, "bad.yaml", text)
    line = fails(["train", "outlined", "--config", path, "--out", tmp_path / "ck"], capsys)
    assert message in line and "bad.yaml" in line


def test_a_stage_without_its_inputs_names_the_folder_and_the_command(tmp_path, capsys, no_model_loads):
    path = config(tmp_path, "tiny.yaml", "steps: 1\n")
    line = fails(["train", "motion", "--config", path, "--out", tmp_path / "empty"], capsys)
    assert "empty does not exist: make it with `python -m minianimate train vae --config configs/vae.yaml --out" in line
    with pytest.raises(FileNotFoundError, match="train vae"):
        stages.run_stage("motion", path, out=tmp_path / "empty")


def test_train_defaults_to_the_package_checkpoints_wherever_it_runs(tmp_path, capsys, monkeypatch):
    seen = {}
    monkeypatch.setattr(stages, "run_stage", lambda stage, cfg, **kw: seen.update(kw))
    assert cli.main(["train", "vae", "--config", str(CHECKPOINTS.parents[1] / "configs" / "vae.yaml")]) == 0
    assert seen["out"] == CHECKPOINTS and seen["run"] is None and list(tmp_path.iterdir()) == []


def test_a_config_of_ones_own_does_not_replace_the_shipped_checkpoints_unless_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(stages, "run_stage", lambda stage, cfg, **kw: None)
    path = config(tmp_path, "tiny.yaml", TINY_VAE)
    assert "would replace the shipped checkpoints" in fails(["train", "vae", "--config", path], capsys)
    assert cli.main(["train", "vae", "--config", str(path), "--out", CK]) == 0


# --- damaged checkpoints: every file the pipeline reads -----------------------------------------------------
FILES = ["motion_module.safetensors", "unet_base/diffusion_pytorch_model.safetensors",
         "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "domain_adapter.safetensors",
         "lora_pastel.safetensors", "motion_loras/zoom-in.safetensors"]
DAMAGE = {"truncated": "truncated safetensors file", "random bytes": "not a checkpoint",
          "renamed key": "does not fit the model"}


def damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    else:  # one tensor renamed, as an edited file or another implementation's naming would have it
        state = load_file(path)
        key = sorted(state)[0]
        state[key.replace("weight", "kernel") if "weight" in key else key + "_renamed"] = state.pop(key)
        save_file(state, path)


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints") / "ck"
    shutil.copytree(CHECKPOINTS, root)
    return root


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("file", FILES)
def test_a_damaged_checkpoint_names_the_file_and_what_is_wrong(file, kind, copy_root, capsys):
    root, path = copy_root, copy_root / file
    damage(path, kind)
    try:
        line = fails(["generate", "--prompt", "a red circle", "--model", "pastel", "--motion-lora", "zoom-in",
                      "--frames", "1", "--steps", "1", "--out", "clip.gif", "--checkpoints", root], capsys)
        assert str(path) in line and DAMAGE[kind] in line
        if kind == "renamed key" and file == "motion_module.safetensors":
            assert "a renamed key" in line and "layers_per_block" not in line
        with pytest.raises(CheckpointError, match=str(path)):
            pipe = models.load_pipeline("pastel", root)
            models.check_motion_lora("zoom-in", root)
            pipe.generate("a red circle", frames=1, steps=1, motion_loras=["zoom-in"], progress=False)
    finally:
        shutil.copyfile(CHECKPOINTS / file, path)


def test_read_state_dict_tells_pickles_html_and_lfs_pointers_apart(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(2)}}, tmp_path / "named.safetensors")  # a pickle, misnamed
    assert list(read_state_dict(tmp_path / "named.safetensors")) == ["a"]
    data = (tmp_path / "named.safetensors").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "page.safetensors").write_text("<!DOCTYPE html><html>404</html>")
    (tmp_path / "lfs.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    for name, message in [("cut.ckpt", "truncated torch checkpoint"), ("page.safetensors", "starts with '<!DOCTYPE"),
                          ("lfs.safetensors", "starts with 'version https://git-lfs")]:
        with pytest.raises(CheckpointError, match=message):
            read_state_dict(tmp_path / name)


# --- run folders, --resume, a killed run ------------------------------------------------------------------
def test_each_config_trains_in_its_own_run_folder_and_resume_refuses_another_config(tmp_path, capsys):
    a = config(tmp_path, "a.yaml", TINY_VAE)
    b = config(tmp_path, "b.yaml", TINY_VAE + "lr: 0.002\n")
    assert cli.main(["train", "vae", "--config", str(a), "--out", str(tmp_path / "ck")]) == 0
    assert (tmp_path / "runs" / "vae-a" / "trainer_state.pt").exists()
    before = digest(tmp_path / "ck")
    line = fails(["train", "vae", "--config", b, "--out", tmp_path / "ck", "--run", "runs/vae-a", "--resume"], capsys)
    assert "runs/vae-a/config.json" in line and str(b) in line and "lr 0.001 there, 0.002 here" in line
    with pytest.raises(ValueError, match="only steps may change"):
        stages.run_stage("vae", b, out=tmp_path / "ck", run="runs/vae-a", resume=True, progress=False)
    assert digest(tmp_path / "ck") == before  # nothing exported
    assert cli.main(["train", "vae", "--config", str(b), "--out", str(tmp_path / "ck"), "--resume"]) == 0
    assert (tmp_path / "runs" / "vae-b" / "trainer_state.pt").exists()
    umask = os.umask(0)
    os.umask(umask)
    for path in [*(tmp_path / "ck").rglob("*.*"), *(tmp_path / "runs").rglob("*.*")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path  # no 0600 from temp files


def test_written_files_keep_the_umask_mode(tmp_path):
    old = os.umask(0o007)
    try:
        save_safetensors({"a": torch.zeros(1)}, tmp_path / "a.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o660


KILL = """
import os, signal, sys, torch
import minianimate.checkpoint as checkpoint, minianimate.trainer as trainer
torch.set_num_threads({threads})
step_generator, save_file, saves = trainer.step_generator, checkpoint.save_file, []
def killing_step_generator(seed, step):
    if "{where}" == "between checkpoints" and step == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return step_generator(seed, step)
def killing_save_file(state, path, metadata=None):
    saves.append(path)
    if "{where}" == "while writing a checkpoint" and len(saves) == 2:  # the weights of step 4
        open(path, "wb").write(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)
    return save_file(state, path, metadata=metadata)
trainer.step_generator, checkpoint.save_file = killing_step_generator, killing_save_file
from minianimate.toy.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("where", ["between checkpoints", "while writing a checkpoint"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(where, tmp_path):
    cfg = config(tmp_path, "tiny.yaml", TINY_VAE)
    stages.run_stage("vae", cfg, out=tmp_path / "full", run=tmp_path / "run_full", progress=False)
    script = KILL.format(threads=torch.get_num_threads(), where=where)
    killed = subprocess.run([sys.executable, "-c", script, "train", "vae", "--config", cfg, "--out", tmp_path / "ck",
                             "--run", tmp_path / "run"], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "ck" / "vae").exists()  # nothing exported
    state = read_state_dict(tmp_path / "run" / "trainer_state.pt", raw=True)
    weights, meta = read_state_dict(tmp_path / "run" / "weights.safetensors", metadata=True)  # never half a file
    assert state["step"] == 2 and meta["step"] == "2"
    stages.run_stage("vae", cfg, out=tmp_path / "ck", run=tmp_path / "run", resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "trainer_state.pt",
                                                                     "weights.safetensors"]  # no temp file left
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "ck" / vae).read_bytes() == (tmp_path / "full" / vae).read_bytes()
    assert (read_state_dict(tmp_path / "run" / "trainer_state.pt", raw=True)["losses"]
            == read_state_dict(tmp_path / "run_full" / "trainer_state.pt", raw=True)["losses"])


def test_resume_refuses_a_run_beyond_the_configs_steps(tmp_path):
    cfg = config(tmp_path, "tiny.yaml", TINY_VAE)
    stages.run_stage("vae", cfg, out=tmp_path / "ck", progress=False)
    short = config(tmp_path, "tiny.yaml", TINY_VAE.replace("steps: 4", "steps: 2"))
    with pytest.raises(ValueError, match="at step 4, beyond steps: 2"):
        stages.run_stage("vae", short, out=tmp_path / "ck", resume=True, progress=False)


def test_train_steps_trains_a_run_short_and_resumes_it_further(tmp_path, capsys):
    cfg = config(tmp_path, "tiny.yaml", TINY_VAE)  # steps: 4
    stages.run_stage("vae", cfg, out=tmp_path / "full", run=tmp_path / "run_full", progress=False)
    args = ["train", "vae", "--config", str(cfg), "--out", str(tmp_path / "ck"), "--run", str(tmp_path / "run")]
    assert cli.main(args + ["--steps", "2"]) == 0
    assert read_state_dict(tmp_path / "run" / "trainer_state.pt", raw=True)["step"] == 2
    assert cli.main(args + ["--resume"]) == 0  # to the config's 4
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "ck" / vae).read_bytes() == (tmp_path / "full" / vae).read_bytes()
    assert "steps" in fails(args + ["--steps", "0"], capsys)


# --- make-data, the real commands, exit codes --------------------------------------------------------------
def test_make_data_refuses_a_used_folder_unless_overwrite_and_leaves_no_stale_clip(tmp_path, capsys):
    datasets.write_dataset(tmp_path / "d", videos=3, images=1, seed=0, frames=2)
    line = fails(["make-data", "--out", tmp_path / "d", "--videos", "1", "--images", "1", "--frames", "2"], capsys)
    assert "is not empty: pass --overwrite" in line
    with pytest.raises(FileExistsError):
        datasets.write_dataset(tmp_path / "d", videos=1, images=1, seed=0, frames=2)
    assert cli.main(["make-data", "--out", str(tmp_path / "d"), "--videos", "1", "--images", "1", "--frames", "2",
                     "--overwrite"]) == 0
    assert len(list((tmp_path / "d" / "videos").rglob("*.mp4"))) == 1
    assert (tmp_path / "d" / "videos.csv").read_text().count("\n") == 2


def test_generate_from_another_checkpoint_folder_with_an_upper_case_suffix(tmp_path, copy_root):
    assert cli.main(["generate", "--prompt", "a red circle", "--frames", "2", "--steps", "1", "--guidance", "0",
                     "--checkpoints", str(copy_root), "--out", str(tmp_path / "clip.GIF")]) == 0
    assert (tmp_path / "clip.GIF").stat().st_size > 0


def test_exit_status_one_line_and_debug_traceback_from_a_real_process(tmp_path):
    command = [sys.executable, "-m", "minianimate", "generate", "--prompt", "a red circle", "--frames", "0",
               "--out", "x.gif"]
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 2 and plain.stderr == "error: --frames: must be >= 1, got 0\n"
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


SEGFAULT = """
import torch
from minianimate.motion_module import MotionModule
module = MotionModule(32, heads=4, groups=16)
x = torch.randn(2 * 4, 32, 16, 16).to(memory_format=torch.channels_last)  # as the VAE's latents come out
module(x, num_frames=4).square().mean().backward()  # only the module's weights need gradients
"""


def test_motion_module_trains_on_channels_last_4_frame_clips():
    """torch 2.13.0+cpu segfaults in GroupNorm backward on a channels-last input that needs no gradient while
    the norm's weights do (the first motion module in stage 2, 4-frame clips); MotionModule makes it contiguous."""
    assert subprocess.run([sys.executable, "-c", SEGFAULT], capture_output=True).returncode == 0


def test_saved_config_is_the_dataclass(tmp_path):
    cfg = stages.VAEStage(steps=2, batch=2, warmup=1, checkpoint_every=2, pool=8, crop=16)
    stages.run_stage("vae", cfg, out=tmp_path / "ck", progress=False)
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("vae-") and json.loads((run / "config.json").read_text()) == asdict(cfg)
