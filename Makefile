# Two commands do all set-up on a fresh machine: `make test` and `make run`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench train opencv-doc train-photos clean-venv chromium systemd-analyze

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/teaprint --root . run

# Debian's Chromium + chromedriver for tests/test_browser.py (the test is never skipped), and a CJK font
# so that the Chinese page renders as text, not boxes (tests/test_i18n.py, docs/screenshot.py).
chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! dpkg -s fonts-wqy-microhei >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver fonts-wqy-microhei; \
	fi

# Debian's systemd package for `systemd-analyze verify` of contrib/*.service in tests/test_service_unit.py
# (installing it in a container starts nothing; the test is never skipped).
systemd-analyze:
	@if ! command -v systemd-analyze >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends systemd; \
	fi

test: $(STAMP) chromium systemd-analyze
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

# Reproduces the shipped encoder, pipeline/data/models/teaprint-encoder.keras, and the keypoint vote's visual words (teaprint-words.npz): its recorded command (training.command
# in the .json beside it), which also reads ../shared/data/puerh_dev's bare/ and chunks/ photos; --out is the shipped path.
train: $(STAMP) train-photos
	cmd="$$($(VENV)/bin/python -c 'import json; print(json.load(open("pipeline/data/models/teaprint-encoder.json"))["training"]["command"])')" \
	  && echo "$$cmd" && eval "$(VENV)/bin/$$cmd --out pipeline/data/models/teaprint-encoder.keras"
	$(VENV)/bin/python -m pipeline.training.vocabulary --out pipeline/data/models/teaprint-words.npz

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_engine.py
	$(VENV)/bin/python bench/bench_daemon.py
	$(VENV)/bin/python bench/bench_server.py
	$(VENV)/bin/python bench/bench_runtime.py

clean-venv:
	rm -rf $(VENV)
