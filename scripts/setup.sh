#!/usr/bin/env bash
# Set up napari-learn-complete on a fresh Debian machine with Python 3.11.
#   bash scripts/setup.sh          -> .venv with the package (enough for the headless demo and CLI)
#   bash scripts/setup.sh --test   -> also test tools and the Ray extra (its tests run), plus Xvfb
#                                     and Mesa for napari's OpenGL canvas
# Idempotent: running it again only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
python=${PYTHON:-python3}
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_packages+=(python3-venv)
fi
if [[ $want_test -eq 1 ]]; then
    # napari's canvas needs real OpenGL: the Qt offscreen platform cannot create it, Xvfb+Mesa can.
    apt_packages+=(xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
        libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
        libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1)
fi
missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision come from the registry together (versions pinned in pyproject.toml), so
# torchvision's compiled ops match the torch they were built for.
if [[ $want_test -eq 1 ]]; then
    .venv/bin/python -m pip install -q -e ".[testing,ray]"
else
    .venv/bin/python -m pip install -q -e ".[pyqt6]"
fi
.venv/bin/python -c "import torch, torchvision.ops; torchvision.ops.nms" \
    || { echo "torch/torchvision do not import together; see README" >&2; exit 1; }
echo "napari-learn-complete is set up in .venv"
