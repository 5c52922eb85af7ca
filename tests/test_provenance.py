"""Every stored measurement names the commit it ran on and the checkpoint files it read."""
import hashlib
import json
from pathlib import Path

import pytest

from minianimate.toy.models import CHECKPOINTS
from minianimate.toy.provenance import checkpoint_hashes, provenance

ROOT = Path(__file__).resolve().parent.parent
RESULTS = sorted((ROOT / "benchmarks" / "results").rglob("*.json"))
# Measurements under data_samples/ that do not carry it yet, each with the reason it is missing: none. The training
# logs the stages wrote before they recorded it carry a backfilled block (the commit that shipped their files).
NOT_YET = {}


def entries(stamp: dict) -> list[dict]:
    """A provenance block's commit/checkpoint entries: itself, or one per section measured apart."""
    return list(stamp["by_section"].values()) if "by_section" in stamp else [stamp]


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.relative_to(ROOT / "benchmarks" / "results").as_posix())
def test_every_stored_result_names_its_commit_and_checkpoints(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict) and "provenance" in data, f"{path.name}: no provenance (minianimate.toy.provenance)"
    for entry in entries(data["provenance"]):
        assert len(entry["commit"]) == 40 and entry["checkpoints"], entry
        assert all(len(h) == 64 for h in entry["checkpoints"].values())


def test_the_measurements_under_data_samples_without_provenance_are_the_known_ones():
    jsons = {p.relative_to(ROOT / "data_samples").as_posix(): json.loads(p.read_text())
             for p in (ROOT / "data_samples").rglob("*.json") if p.name != "config.json"}  # config.json: a model's
    missing = {name for name, data in jsons.items() if not (isinstance(data, dict) and "provenance" in data)}
    assert missing == set(NOT_YET)
    for name, data in jsons.items():
        for entry in entries(data["provenance"]) if name not in NOT_YET else ():
            assert len(entry["commit"]) == 40 and entry["checkpoints"], (name, entry)
            assert all(len(h) == 64 for h in entry["checkpoints"].values()), name


def test_a_stage_logs_the_commit_and_the_files_it_wrote(tmp_path):
    from minianimate.toy.stages import report

    (tmp_path / "domain_adapter.safetensors").write_bytes(b"weights")
    report("adapter", tmp_path, 0.0, steps=3)
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["adapter"]["steps"] == 3
    stamp = log["provenance"]["by_section"]["adapter"]
    assert stamp["checkpoints"] == {"domain_adapter.safetensors": hashlib.sha256(b"weights").hexdigest()}
    assert "commit" in stamp


def test_provenance_hashes_the_files_a_measurement_read():
    stamp = provenance("motion", "base")
    weights = CHECKPOINTS / "motion_module.safetensors"
    assert stamp["checkpoints"]["motion_module.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert {"unet_base/config.json", "unet_base/diffusion_pytorch_model.safetensors"} <= set(stamp["checkpoints"])
    assert stamp["commit"] is None or len(stamp["commit"]) == 40


def test_another_checkpoint_folder_is_hashed_from_there(tmp_path):
    (tmp_path / "motion_module.safetensors").write_bytes(b"not the shipped module")
    assert checkpoint_hashes("motion", root=tmp_path) == {
        "motion_module.safetensors": hashlib.sha256(b"not the shipped module").hexdigest()}
