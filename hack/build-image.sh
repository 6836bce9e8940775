#!/usr/bin/env bash
# Builds the OCI image `capstan:dev` FROM scratch, without a container daemon (umoci): the static release
# binary (hack/build-release.sh), the shared libraries it loads (libnftables, libmnl, libyaml and theirs,
# found with ldd), the CA certificates, `capstan-cni` beside `capstan`, and /etc/passwd naming the proxy's
# uid 1337. No base image is fetched.
#
#   hack/build-image.sh [--binary PATH] [--out DIR] [--check]
#
# --binary   the capstan binary to package (default: the release build, built now)
# --out      where to write the OCI layout (default .build-image/oci) and capstan-dev.oci.tar beside it
# --check    then unpack the image and run `capstan --version`, `capstan init --dry-run`, `capstan init`
#            (in a new network namespace) and `capstan-cni` VERSION from its root filesystem (chroot,
#            own mount namespace)
#
# Prints the image's size: the compressed layer (what a registry stores and a node pulls) and the root
# filesystem unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" out=".build-image/oci" check=false
while (($#)); do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --check) check=true; shift ;;
    *) echo "hack/build-image.sh: unknown argument \"$1\" (see the header of this script)" >&2; exit 2 ;;
  esac
done
command -v umoci >/dev/null || hack/setup.sh
if [ -z "$binary" ]; then
  binary="$(hack/build-release.sh 2>/dev/null)/capstan"
fi
[ -x "$binary" ] || { echo "hack/build-image.sh: no executable at \"$binary\"" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/proc" "$root/tmp" "$root/var/run/capstan" "$root/etc/istio/proxy"
chmod 1777 "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/capstan"
# The CNI configuration's "type" names the plugin binary; capstan acts as the plugin under that name.
ln -s capstan "$root/usr/local/bin/capstan-cni"

# The shared libraries the binary loads, at the paths the dynamic loader looks for them, and the loader;
# and libnftables with its own, which capstan loads when it first programs nftables (dlopen) rather than
# at start, so ldd of the binary does not list them.
# awk reads the whole list (no early exit): ldconfig writing into a closed pipe would fail the pipeline under pipefail.
nftables=$(ldconfig -p | awk '$1 == "libnftables.so.1" && !found { print $NF; found = 1 }')
[ -n "$nftables" ] || { echo "hack/build-image.sh: libnftables.so.1 is not installed (hack/setup.sh installs it)" >&2; exit 1; }
{ echo "$nftables"; ldd "$binary" "$nftables" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'; } \
  | sort -u | while read -r library; do
  mkdir -p "$root$(dirname "$library")"
  cp -L "$library" "$root$library"
done
# A program's loader path may go through a symlinked /lib64 on the host; keep it reachable as written.
interpreter=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
if [ -n "$interpreter" ] && [ ! -e "$root$interpreter" ]; then
  mkdir -p "$root$(dirname "$interpreter")"
  cp -L "$interpreter" "$root$interpreter"
fi

cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nistio-proxy:x:1337:1337:istio-proxy:/tmp:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nistio-proxy:x:1337:\n' > "$root/etc/group"

rm -rf "$out"
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
umoci new --image "$out:dev"
umoci insert --image "$out:dev" "$root" /
umoci config --image "$out:dev" --config.entrypoint /usr/local/bin/capstan \
  --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.workingdir / --author "Capstan" --config.label org.opencontainers.image.title=capstan
umoci gc --layout "$out"
archive="$(dirname "$out")/capstan-dev.oci.tar"
tar -C "$out" -cf "$archive" .

# One layer: the largest blob (the others are the small config, manifest and index).
layer=$(find "$out/blobs" -type f -printf '%s\n' | sort -n | tail -1)
unpacked=$(du -sb "$root" | cut -f1)
echo "hack/build-image.sh: capstan:dev in $out (and $archive): layer $((layer / 1024 / 1024)) MiB compressed, $((unpacked / 1024 / 1024)) MiB unpacked"

if $check; then
  bundle="$work/bundle"
  umoci unpack --image "$out:dev" "$bundle" >/dev/null
  # In a mount namespace of its own with the image's /proc mounted (Swift reads its arguments from
  # /proc/self/cmdline), rooted in the image: nothing of the host's file system is reachable.
  in_image() { unshare --mount --pid --fork --mount-proc="$bundle/rootfs/proc" chroot "$bundle/rootfs" "$@"; }
  version=$(in_image /usr/local/bin/capstan --version)
  in_image /usr/local/bin/capstan init --dry-run > "$work/dry-run.txt"
  # A real apply in a network namespace of its own: libnftables, loaded at run time, is in the image.
  unshare --net --mount --pid --fork --mount-proc="$bundle/rootfs/proc" chroot "$bundle/rootfs" /usr/local/bin/capstan init >/dev/null \
    || { echo "hack/build-image.sh: capstan init in the image could not apply its rules" >&2; exit 1; }
  grep -q 'table inet capstan' "$work/dry-run.txt" || { echo "hack/build-image.sh: init --dry-run in the image printed no ruleset" >&2; exit 1; }
  # Run as the CNI plugin (by its name), as a container runtime runs it: VERSION answers from the image alone.
  echo '{"cniVersion": "1.0.0"}' | CNI_COMMAND=VERSION in_image /usr/local/bin/capstan-cni | grep -q supportedVersions \
    || { echo "hack/build-image.sh: capstan-cni VERSION in the image gave no supportedVersions" >&2; exit 1; }
  echo "hack/build-image.sh: checked: capstan $version, capstan init (--dry-run, and applied in a new network namespace) and capstan-cni VERSION run from the image's root filesystem"
fi
