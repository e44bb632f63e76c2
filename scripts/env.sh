# Source this file (bash) to get a shell with vidplan's workspace and ROS 2 environment:
#   source scripts/env.sh
# It activates .venv, sources ros_ws/install/setup.bash, and keeps DDS on this machine.
_vidplan_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -f "$_vidplan_root/ros_ws/install/setup.bash" ]]; then
  echo "vidplan: workspace not built; run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
export VIRTUAL_ENV="$_vidplan_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# install/setup.bash reads unset variables; relax nounset while sourcing it.
case $- in *u*) _vidplan_nounset=1; set +u;; *) _vidplan_nounset=0;; esac
# shellcheck disable=SC1091
source "$_vidplan_root/ros_ws/install/setup.bash"
[[ $_vidplan_nounset == 1 ]] && set -u
# ROS 2 stays on loopback (Kilted ignores ROS_LOCALHOST_ONLY); Fast DDS is the RMW the wheels ship.
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST alone limits discovery, not the sockets: they bind to every interface. The
# Fast DDS profile below binds them to 127.0.0.1 (UDP on lo + shared memory). A value you set is kept; a robot with
# cameras or controllers on other machines sets VIDPLAN_DDS_LOOPBACK=0 (README, Troubleshooting).
_vidplan_dds="$_vidplan_root/ros_ws/src/vidplan_bringup/config/fastdds_loopback.xml"
if [[ "${VIDPLAN_DDS_LOOPBACK:-1}" == "0" ]]; then
  if [[ "${FASTDDS_DEFAULT_PROFILES_FILE:-}" == "$_vidplan_dds" ]]; then  # switched off in a shell that had it
    unset FASTDDS_DEFAULT_PROFILES_FILE
    [[ "${ROS_AUTOMATIC_DISCOVERY_RANGE:-}" != "SYSTEM_DEFAULT" ]] || unset ROS_AUTOMATIC_DISCOVERY_RANGE
  fi
elif [[ -z "${FASTDDS_DEFAULT_PROFILES_FILE:-}" ]]; then
  export FASTDDS_DEFAULT_PROFILES_FILE="$_vidplan_dds"
fi
if [[ "${FASTDDS_DEFAULT_PROFILES_FILE:-}" == "$_vidplan_dds" ]]; then
  # With LOCALHOST rmw_fastrtps adds its own all-interface UDP transport; SYSTEM_DEFAULT leaves them to the profile.
  case "${ROS_AUTOMATIC_DISCOVERY_RANGE:-}" in ""|LOCALHOST) export ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT;; esac
else
  export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
fi
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
# Headless MuJoCo rendering; models load from local directories only.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VIDPLAN_ROOT="$_vidplan_root"
export VIDPLAN_MENAGERIE_DIR="${VIDPLAN_MENAGERIE_DIR:-$_vidplan_root/.cache/menagerie/franka_emika_panda}"
unset _vidplan_root _vidplan_nounset _vidplan_dds
