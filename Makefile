# Two commands do all set-up on a fresh machine: `make test` and `make run`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench train opencv-doc train-photos clean-venv chromium

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/teaprint --root . run

# Debian's Chromium + chromedriver for tests/test_browser.py (the test is never skipped).
chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver; \
	fi

test: $(STAMP) chromium
	$(VENV)/bin/python -m pytest -q

# Debian's opencv-doc sample photos: part of the encoder's training data.
opencv-doc:
	@test -d /usr/share/doc/opencv-doc/examples/data || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y opencv-doc; }

# The encoder's real training photos from Debian packages (pipeline.training.data.DEBIAN_PHOTO_PACKAGES):
# opencv-doc's samples, wallpaper photos (mate-backgrounds' nature set, lomiri-wallpapers, ukui-wallpapers),
# paper and cork scans (mypaint-data-extras), GIMP's texture patterns (gimp-data, gimp-data-extras).
TRAIN_PHOTO_PACKAGES := opencv-doc mate-backgrounds lomiri-wallpapers ukui-wallpapers mypaint-data-extras gimp-data gimp-data-extras
train-photos:
	@if ! dpkg -s $(TRAIN_PHOTO_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $(TRAIN_PHOTO_PACKAGES); fi

# Reproduces the shipped encoder, pipeline/data/models/teaprint-encoder.keras: its recorded command (training.command
# in the .json beside it), which also reads ../shared/data/puerh_dev's bare/ and chunks/ photos; --out is the shipped path.
train: $(STAMP) train-photos
	cmd="$$($(VENV)/bin/python -c 'import json; print(json.load(open("pipeline/data/models/teaprint-encoder.json"))["training"]["command"])')" \
	  && echo "$$cmd" && eval "$(VENV)/bin/$$cmd --out pipeline/data/models/teaprint-encoder.keras"

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_engine.py
	$(VENV)/bin/python bench/bench_daemon.py
	$(VENV)/bin/python bench/bench_server.py
	$(VENV)/bin/python bench/bench_runtime.py

clean-venv:
	rm -rf $(VENV)
