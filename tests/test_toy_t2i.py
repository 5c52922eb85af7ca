"""The shipped toy text-to-image models load and sample; the command line writes images."""
import numpy as np
import pytest
import torch

from minianimate.toy.cli import main
from minianimate.toy.models import CHECKPOINTS, load_t2i

needs_checkpoints = pytest.mark.skipif(not (CHECKPOINTS / "unet_base").exists(),
                                       reason="shipped checkpoints not built (make checkpoints)")


@needs_checkpoints
def test_sample_images_command_writes_pngs_and_a_contact_sheet(tmp_path):
    assert main(["sample-images", "--model", "base", "--prompt", "a red square", "--n", "2", "--steps", "3",
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000.png", "001.png", "contact_sheet.png"]


@needs_checkpoints
def test_generation_is_deterministic_for_a_seed():
    model = load_t2i("base")
    a = model.generate(["a blue circle"], steps=3, seed=5)
    assert a.shape == (1, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, model.generate(["a blue circle"], steps=3, seed=5))


@needs_checkpoints
def test_personalized_models_share_the_base_architecture():
    base, outlined, pastel = (load_t2i(m) for m in ("base", "outlined", "pastel"))
    assert list(base.unet.state_dict()) == list(outlined.unet.state_dict()) == list(pastel.unet.state_dict())
    changed = [k for k, v in base.unet.state_dict().items() if not torch.equal(v, outlined.unet.state_dict()[k])]
    assert changed  # DreamBooth changed the weights themselves


def test_missing_checkpoints_say_how_to_build_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vae is missing: make it with `python -m minianimate train vae"):
        load_t2i("base", root=tmp_path)
