# Sourced by hack/ scripts (after they cd to the repository) that build network namespaces and nftables rules: they need root. As root they
# run as they are; otherwise they run themselves again through sudo (keeping PATH, where swift is) if sudo
# is installed, and stop with a clear message if it is not.
require_root() {
  [ "$(id -u)" = 0 ] && return 0
  if command -v sudo >/dev/null; then
    exec sudo env "PATH=$PATH" "$PWD/hack/$(basename "$0")" "$@"   # the scripts cd to the repository first
  fi
  echo "$(basename "$0"): network namespaces and nftables need root, and sudo is not installed: run it as root" >&2
  exit 1
}
