#!/bin/sh
# Makes a busybox root filesystem tarball offline from Debian's busybox-static:
# the shape of the official busybox image (one static binary, applet symlinks in
# /bin, root in /etc/passwd). Usage: busybox-rootfs.sh OUT.tar
set -eu
out=${1:?usage: busybox-rootfs.sh OUT.tar}
bb=${BUSYBOX:-/bin/busybox}
if ! "$bb" --list >/dev/null 2>&1; then
    echo "busybox-rootfs.sh: $bb is not a working busybox (apt-get install busybox-static)" >&2
    exit 1
fi
if ldd "$bb" >/dev/null 2>&1; then
    echo "busybox-rootfs.sh: $bb is dynamically linked; install busybox-static" >&2
    exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp" "$root/home" "$root/var/spool/mail" \
         "$root/usr/sbin" "$root/dev" "$root/proc" "$root/sys"
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
chmod 755 "$root"  # mktemp made it 0700; / is 0755 in the official image
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:8:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
G
# Fixed times and owners: the same busybox always gives the same layer digest.
find "$root" -exec touch -h -d @0 {} +
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$root" -cf "$out" .
