#!/usr/bin/env bash
# Create examples/hello/rootfs/ from the host's static busybox.
#
#   examples/hello/make-rootfs.sh
#
# Nothing is downloaded. The tree is rebuilt from scratch on every run and its
# content depends only on this script and /bin/busybox (Debian busybox-static),
# so the image digest is stable for a given busybox version. Modes are set
# explicitly, so the umask does not matter; mtimes are pinned for good measure
# (drover normalizes them anyway).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/rootfs"
busybox=${BUSYBOX:-/bin/busybox}
epoch=${SOURCE_DATE_EPOCH:-0}

[[ -x $busybox ]] || { echo "make-rootfs.sh: $busybox not found (apt-get install busybox-static, or run scripts/setup.sh)" >&2; exit 1; }
# A dynamically linked busybox would not run in an image without libc.
if command -v readelf >/dev/null 2>&1 && readelf -l "$busybox" | grep -q 'program interpreter'; then
  echo "make-rootfs.sh: $busybox is dynamically linked; install busybox-static" >&2
  exit 1
fi

# Build beside the target and swap it in, so an interrupted run never leaves
# a half-made rootfs behind.
tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"/{bin,etc,www,tmp}

install -m 0755 "$busybox" "$tmp/bin/busybox"
for applet in sh httpd echo cat ls; do
  ln -s busybox "$tmp/bin/$applet"
done

cat >"$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
PASSWD

cat >"$tmp/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

cat >"$tmp/www/index.html" <<'HTML'
<!doctype html>
<html>
<head><meta charset="utf-8"><title>hello from drover</title></head>
<body>
<h1>hello from drover</h1>
<p>This page is served by busybox httpd from a read-only, digest-pinned image.</p>
</body>
</html>
HTML

# Directories 0755, files 0644 (busybox keeps 0755), /tmp sticky and world-writable.
find "$tmp" -type d -exec chmod 0755 {} +
chmod 0644 "$tmp/etc/passwd" "$tmp/etc/group" "$tmp/www/index.html"
chmod 1777 "$tmp/tmp"
find "$tmp" -exec touch -h -d "@$epoch" {} +

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "made $out"
