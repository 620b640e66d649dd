"""Write rows: copy-up, untar, rm -rf, chmod -R, dd on a fresh upper; the package install."""

import os
import statistics
import subprocess
import time

from .common import IMPLS, LAYERFS, MNT, Mount, drop_caches, fresh_upper, log, mount_cmd, mountpoint, timed, upper_extra
from .stacks import INSTALL_PKGS, build_install_debs, build_write_stack

def write_ops(tar):
    """(name, setup, timed command, follow-up name, follow-up command), run in the mount."""
    return [
        ("copy-up: append to 1000 lower files", None,
         'for f in files/*; do echo x >> "$f"; done', None, None),
        ("copy-up: append to a 1 GiB lower file", None, "echo x >> big/1g.bin", None, None),
        ("untar 20k files", "mkdir new", f"tar xf {tar} -C new",
         "rm -rf those 20k files", "rm -rf new"),
        ("rm -rf 1.4k lower entries", None, "rm -rf tree", None, None),
        ("chmod -R of 1.4k lower entries", None, "chmod -R o+w tree", None, None),
        ("dd 100 MB in 4 KiB writes", None,
         "dd if=/dev/zero of=dd.bin bs=4k count=25600 status=none", None, None),
        ("dd 100 MB in 4 KiB writes + fsync", None,
         "dd if=/dev/zero of=dd.bin bs=4k count=25600 conv=fsync status=none", None, None),
    ]


# 20,000 getxattr calls of an xattr a lower file lacks: each one round trip (the kernel
# caches no xattrs but ACLs), answered ENODATA.
GETXATTR_CMD = ("python3 -c 'import os\nfor _ in range(20000):\n try: os.getxattr(\"files/f0000\", "
                "\"user.none\")\n except OSError: pass'")


def roundtrip_ops(tar):
    """The rows that are a round trip per request: 20k getxattr, untar, rm -rf."""
    ops = write_ops(tar)
    return [("getxattr round trips x20k", None, GETXATTR_CMD, None, None), ops[2], ops[3]]


def bench_roundtrip(reps, results):
    """`roundtrip_ops` as `bench_write` runs them, with the kernel's durability only."""
    bench_write(reps, results, roundtrip_ops, [False])


def bench_write(reps, results, ops=write_ops, volatiles=(False, True)):
    """Each operation on a fresh mount with an empty upper, caches dropped; with the kernel's
    durability (copied-up data fsynced) and with `volatile`. fuse-overlayfs never fsyncs, so
    it runs as it is in both rows."""
    lower, tar = build_write_stack()
    cwd = os.path.dirname(lower)
    mp = MNT
    for volatile in volatiles:
        tag = ", volatile" if volatile else ""
        for name, setup, cmd, name2, cmd2 in ops(tar):
            for impl in IMPLS:
                for _ in range(reps):
                    extra = upper_extra(cwd)
                    if volatile and impl != "fuse-overlayfs":
                        extra += ",volatile"
                    drop_caches()
                    m = Mount(impl, ["lower"], cwd, mp, extra)
                    try:
                        if setup:
                            timed(setup, mp)
                        results.setdefault((name + tag, impl), []).append(timed(cmd, mp))
                        if cmd2:
                            results.setdefault((name2 + tag, impl), []).append(timed(cmd2, mp))
                    finally:
                        m.close()
                line = f"  {impl:15} {name + tag:45} {statistics.median(results[(name + tag, impl)]):.3f}s"
                if cmd2:
                    line += f", {name2}: {statistics.median(results[(name2 + tag, impl)]):.3f}s"
                log(line)


INSTALL = "apt-get install -y -qq --no-install-recommends /debs/*.deb >/dev/null"


def install_cmd(impl, base, debs, upper, work):
    """The whole container run installing the .debs of `debs` (see the docstring)."""
    if impl == "layerfs":
        return [LAYERFS, "run", "-o", f"lowerdir={base},upperdir={upper},workdir={work}",
                "--bind", f"{debs}:/debs:ro", "-e", "DEBIAN_FRONTEND=noninteractive",
                "--", "sh", "-c", INSTALL]
    mp = MNT
    mnt = " ".join(mount_cmd(impl, [base], mp, f",upperdir={upper},workdir={work}"))
    script = f"""set -e
{mnt}
trap 'umount -R {mp}' EXIT
mount -t proc proc {mp}/proc
mount --rbind /dev {mp}/dev
mount -t tmpfs tmpfs {mp}/tmp
mkdir -p {mp}/debs
mount --bind {debs} {mp}/debs
mount -o remount,bind,ro {mp}/debs
chroot {mp} env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root DEBIAN_FRONTEND=noninteractive sh -c '{INSTALL}'
"""
    return ["unshare", "-m", "-p", "-f", "--propagation", "private", "sh", "-c", script]


def bench_install(base, reps, results):
    debs = build_install_debs(base)
    d = os.path.dirname(debs)
    mountpoint(MNT)
    row = f"apt-get install {INSTALL_PKGS} ({len(os.listdir(debs))} .debs), container over the base"
    for impl in IMPLS:
        if impl.startswith("layerfs-"):
            log(f"  {impl}: no install row (layerfs run has no --file-io)")
            continue
        for _ in range(reps):
            scratch = fresh_upper(d)
            upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
            drop_caches()
            t0 = time.perf_counter()
            subprocess.run(install_cmd(impl, base, debs, upper, work), check=True)
            results.setdefault((row, impl), []).append(time.perf_counter() - t0)
            assert os.path.exists(os.path.join(upper, "usr/bin/hello")), f"{impl}: hello not installed"
        log(f"  {impl:15} install {statistics.median(results[(row, impl)]):.2f}s")
