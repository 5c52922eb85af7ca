# Two commands on a fresh machine: `make demo` and `make test`.
PY       ?= python3
VENV     ?= .venv
VPY      := $(VENV)/bin/python
TORCH    ?= torch==2.13.0
NB_TIMEOUT ?= 600
# make test's workers (pytest-xdist), one torch thread each: both cores of a 2-core machine busy
JOBS     ?= 2

.PHONY: venv demo test test-py test-nb notebooks exercises bench checkpoints clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet $(TORCH)
	$(VPY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(VPY) -m minianimate demo --out outputs

test: venv test-py test-nb

test-py: venv
	MINIANIMATE_QUICK=1 OMP_NUM_THREADS=1 $(VPY) -m pytest -n $(JOBS) tests

# A notebook's cells run in order in one kernel: --dist loadscope keeps each notebook on one worker.
test-nb: venv
	MINIANIMATE_QUICK=1 OMP_NUM_THREADS=1 $(VPY) -m pytest -n $(JOBS) --dist loadscope --nbval-lax \
		--nbval-current-env --nbval-cell-timeout=$(NB_TIMEOUT) -p no:cacheprovider notebooks course/source course/student

# Re-execute every notebook in quick mode and store its outputs in place, all from one commit (commit first: it
# refuses a working tree that differs from HEAD). tests/test_notebooks.py checks the outputs came from one commit.
notebooks: venv
	OMP_NUM_THREADS=1 $(VPY) notebooks/run_notebooks.py --timeout $(NB_TIMEOUT)   # one thread, as make test runs them

# The course's student notebooks, rebuilt from the solution notebooks (commit the result; tests/test_course.py
# fails when they drift apart).
exercises: venv
	$(VPY) -m minianimate.course build

# Rebuild the shipped toy checkpoints from scratch (fixed seeds; minutes are logged in
# data_samples/checkpoints/training_log.json). One stage at a time: 2 cores.
checkpoints: venv
	$(VPY) -m minianimate train vae --config configs/vae.yaml
	$(VPY) -m minianimate train base --config configs/base.yaml
	$(VPY) -m minianimate train outlined --config configs/outlined.yaml
	$(VPY) -m minianimate train adapter --config configs/adapter.yaml
	$(VPY) -m minianimate train motion --config configs/motion.yaml          # stage 2, phase 1
	$(VPY) -m minianimate train motion --config configs/motion_decay.yaml    # phase 2: the rate decayed
	$(VPY) -m minianimate train motion --config configs/motion_travel.yaml   # phase 3: prompt travel's fine-tune
	$(VPY) -m minianimate train motion-lora --config configs/motion_lora_zoom_in.yaml
	$(VPY) -m minianimate train motion-lora --config configs/motion_lora_zoom_out.yaml
	$(VPY) -m minianimate train controlnet --config configs/controlnet.yaml
	$(VPY) -m minianimate train pastel --config configs/pastel.yaml --steps 3600   # after the ControlNet: trained partly under it
	$(VPY) -m minianimate train pastel --config configs/pastel.yaml --steps 5400 --resume   # resumed twice, as shipped
	$(VPY) -m minianimate train pastel --config configs/pastel.yaml --resume
	$(VPY) -m minianimate train vae --config configs/vae_decoder.yaml   # last: no stage reads the decoder

bench: venv
	$(VPY) benchmarks/unet_step.py
	$(VPY) benchmarks/motion_step.py --threads 1
	$(VPY) benchmarks/context_memory.py
	$(VPY) benchmarks/controlnet_paths.py
	$(VPY) benchmarks/inference_tricks.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
