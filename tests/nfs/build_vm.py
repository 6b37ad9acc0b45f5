#!/usr/bin/env python3
"""Prepare the kernel and initramfs for the NFS lane (scripts/test-nfs).

Usage: build_vm.py OUT_DIR

Leaves in OUT_DIR (and reuses them on later runs):
  vmlinux          the uncompressed kernel, which QEMU's -kernel boots directly
  modules/         lib/modules/<version>/ of that kernel, depmod'ed
  initramfs.cpio   busybox plus the virtio and 9p modules, and an /init that
                   mounts the host's / over 9p read-only and switch_roots to it
  kernel.version   the kernel version string

The kernel is Debian's linux-image-amd64 of the host's release, fetched with
`apt-get download` and unpacked with dpkg-deb, never installed.
"""

import lzma
import os
import shutil
import stat
import subprocess
import sys

# Loaded in this order by the initramfs (each depends only on earlier ones).
INITRAMFS_MODULES = [
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
    "virtio_pci", "9pnet", "9pnet_virtio", "netfs", "fscache", "9p",
]

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
for m in MODULES; do
  /bin/busybox insmod /lib/mods/$m.ko || echo "initramfs: insmod $m failed"
done
if ! /bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 root /newroot; then
  echo "initramfs: cannot mount the host root over 9p"
  /bin/busybox poweroff -f
fi
/bin/busybox umount /proc
/bin/busybox umount /dev 2>/dev/null
# LANE_INIT comes from the kernel command line (KEY=value pairs become env).
exec /bin/busybox switch_root /newroot /bin/bash "$LANE_INIT"
"""


def log(msg):
    print(f"nfs: setup: {msg}", file=sys.stderr, flush=True)


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def kernel_package():
    """The versioned image package that linux-image-amd64 depends on."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise SystemExit("nfs: setup: apt-cache knows no linux-image-amd64 dependency")


def extract_vmlinux(bzimage, dest):
    """A bzImage holds setup code followed by the compressed kernel; Debian
    compresses it with xz. Find the xz stream and decompress it."""
    data = open(bzimage, "rb").read()
    magic = b"\xfd7zXZ\x00"
    pos = data.find(magic)
    while pos >= 0:
        try:
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            out = dec.decompress(data[pos:])
            if out[:4] == b"\x7fELF":
                with open(dest, "wb") as f:
                    f.write(out)
                return
        except lzma.LZMAError:
            pass
        pos = data.find(magic, pos + 1)
    raise SystemExit(f"nfs: setup: no xz-compressed ELF kernel found in {bzimage}")


def cpio_newc(entries, dest):
    """Write an uncompressed cpio archive in the 'newc' format the kernel
    unpacks. entries: (name, mode, data bytes or None for a directory)."""
    with open(dest, "wb") as f:
        ino = 1

        def put(name, mode, data):
            nonlocal ino
            nb = name.encode() + b"\0"
            hdr = "070701" + "".join(f"{v:08X}" for v in [
                ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0])
            f.write(hdr.encode() + nb)
            f.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
            f.write(data)
            f.write(b"\0" * ((4 - len(data) % 4) % 4))
            ino += 1

        for name, mode, data in entries:
            put(name, mode, data if data is not None else b"")
        put("TRAILER!!!", 0, b"")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = os.path.abspath(sys.argv[1])
    os.makedirs(out, exist_ok=True)
    vmlinux = os.path.join(out, "vmlinux")
    initramfs = os.path.join(out, "initramfs.cpio")
    verfile = os.path.join(out, "kernel.version")
    if all(os.path.exists(p) for p in (vmlinux, initramfs, verfile)):
        log(f"kernel {open(verfile).read().strip()} and initramfs cached in {out}")
        return

    pkg = kernel_package()
    dl = os.path.join(out, "dl")
    os.makedirs(dl, exist_ok=True)
    debs = [d for d in os.listdir(dl) if d.startswith(pkg + "_") and d.endswith(".deb")]
    if not debs:
        log(f"apt-get download {pkg}")
        run("apt-get", "download", "-q", pkg, cwd=dl, stdout=subprocess.DEVNULL)
        debs = [d for d in os.listdir(dl) if d.startswith(pkg + "_") and d.endswith(".deb")]
    deb = os.path.join(dl, sorted(debs)[-1])

    root = os.path.join(out, "kernel-root")
    shutil.rmtree(root, ignore_errors=True)
    log(f"unpacking {os.path.basename(deb)}")
    run("dpkg-deb", "-x", deb, root)
    versions = os.listdir(os.path.join(root, "lib", "modules"))
    if len(versions) != 1:
        raise SystemExit(f"nfs: setup: expected one kernel version in {deb}, got {versions}")
    version = versions[0]
    run("depmod", "-b", root, version)
    moddir = os.path.join(root, "lib", "modules", version)

    extract_vmlinux(os.path.join(root, "boot", f"vmlinuz-{version}"), vmlinux + ".tmp")

    # Locate each initramfs module by name in the extracted tree.
    found = {}
    for dirpath, _, files in os.walk(moddir):
        for fn in files:
            if fn.endswith(".ko"):
                found.setdefault(fn[:-3].replace("-", "_"), os.path.join(dirpath, fn))
    busybox = shutil.which("busybox") or "/bin/busybox"
    with open(busybox, "rb") as f:
        bb = f.read()
    if subprocess.run(["ldd", busybox], capture_output=True).returncode == 0:
        raise SystemExit(f"nfs: setup: {busybox} is not static (install busybox-static)")
    entries = [("bin", 0o40755, None), ("lib", 0o40755, None), ("lib/mods", 0o40755, None),
               ("bin/busybox", 0o100755, bb)]
    present = []
    for m in INITRAMFS_MODULES:
        path = found.get(m)
        if path is None:
            # Built into the kernel, or absent in this version: init skips it.
            continue
        present.append(m)
        with open(path, "rb") as f:
            entries.append((f"lib/mods/{m}.ko", 0o100644, f.read()))
    init = INIT_SCRIPT.replace("MODULES", " ".join(present))
    entries.append(("init", 0o100755, init.encode()))
    cpio_newc(entries, initramfs + ".tmp")

    os.replace(vmlinux + ".tmp", vmlinux)
    os.replace(initramfs + ".tmp", initramfs)
    with open(verfile, "w") as f:
        f.write(version + "\n")
    log(f"kernel {version}: {vmlinux}, modules {len(present)} in initramfs")


if __name__ == "__main__":
    main()
