"""Rootless rows (issue 19, item 5): writable mounts made by an unprivileged user through
fusermount3, as rootless podman's are (no CAP_SYS_ADMIN: no passthrough). The page cache of
five such containers on one base, each read in full, and the read rows on one.

The real stack's base, debs and whiteout layers are copied once, owned by the user
(`nobody`), so everything in them is readable as it is to a rootless container's daemon; the
2 GiB file's layer is used as it is (readable by all). Memory is the page cache charged to a
memory cgroup made for the run (the daemons and the readers run in it, after drop_caches),
so other work on the machine does not count; where no memory cgroup can be made,
`Cached` in /proc/meminfo grows with whatever else runs.

Implementations: `layerfs` (the default), `layerfs+OPTS` (more -o options, e.g.
`layerfs+lower_direct_io=off`), `fuse-overlayfs`, and `kernel` (the kernel's overlay mounted by
root, not rootless: the floor, one copy of the layers' pages).
"""

import os
import shutil
import statistics
import subprocess
import time

from .common import CACHE, IMPLS, LAYERFS, LEFTOVERS, MNT, RUN, drop_caches, log, meminfo, mounted, sh

UID = 65534
ASUSER = ["setpriv", "--reuid", str(UID), "--regid", str(UID), "--clear-groups"]
TAR = "tar c --exclude=./big.bin . | cat >/dev/null"
ROWS = {
    "tar c": TAR,
    "read 2 GiB": "cat big.bin >/dev/null",
    "200 execs of a dynamic binary": "for i in $(seq 200); do /usr/bin/env true; done",
}


def rootless_stack():
    """The layers (top first) in a directory of their own, owned by the user."""
    d = os.path.join(CACHE, "rootless-v1")
    if not os.path.exists(d + ".done"):
        log("copying the real stack for rootless mounts (once, cached)")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for layer in ["whiteouts", "debs", "base"]:
            sh(f"cp -a {os.path.join(CACHE, 'real', layer)} {d}/")
        sh(f"chown -R {UID}:{UID} {d}")
        os.chmod(d, 0o755)
        open(d + ".done", "w").close()
    big = os.path.join(CACHE, "real/big")
    return d, [os.path.join(d, x) for x in ["whiteouts", "debs", "base"]] + [big]


class Charged:
    """A memory cgroup this process (and so every daemon and reader it starts) runs in while
    open; `cache()` is the page cache charged to it, in MiB."""

    def __init__(self):
        self.dir, self.was = None, None
        with open("/proc/self/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
        for _, ctrl, path in lines:
            if "memory" in ctrl.split(","):
                base = "/sys/fs/cgroup/memory" + path
                self.was, self.key = base, "cache"
                break
        else:
            v2 = [p for _, c, p in lines if c == ""]
            if v2:
                base = "/sys/fs/cgroup" + v2[0]
                self.was, self.key = base, "file"
        if self.was:
            try:
                d = os.path.join(self.was, f"layerfs-bench-{RUN}")
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "memory.stat")) as f:
                    if not any(line.split()[0] == self.key for line in f):
                        raise OSError(f"no {self.key} in {d}/memory.stat")
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
                self.dir = d
            except OSError as e:
                log(f"  no memory cgroup ({e}): measuring Cached in /proc/meminfo")
                try:
                    os.rmdir(d)
                except OSError:
                    pass

    def cache(self):
        if not self.dir:
            return meminfo("Cached")
        with open(os.path.join(self.dir, "memory.stat")) as f:
            for line in f:
                k, v = line.split()
                if k == self.key:
                    return int(v) / (1 << 20)
        raise KeyError(self.key)

    def close(self):
        if self.dir:
            with open(os.path.join(self.was, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            for _ in range(100):
                try:
                    os.rmdir(self.dir)
                    break
                except OSError:  # daemons still exiting
                    time.sleep(0.05)


def user_dir(path):
    os.makedirs(path, exist_ok=True)
    os.chown(path, UID, UID)
    if path not in LEFTOVERS:
        LEFTOVERS.append(path)
    return path


class RootlessMount:
    """A writable mount of `lowers` at `mp` made by the user, with a fresh upper in `scratch`."""

    def __init__(self, impl, lowers, scratch, mp):
        self.mp = user_dir(mp)
        if os.path.exists(scratch):
            shutil.rmtree(scratch)
        user_dir(scratch)
        up, work = user_dir(os.path.join(scratch, "upper")), user_dir(os.path.join(scratch, "work"))
        opts = f"lowerdir={':'.join(lowers)},upperdir={up},workdir={work}"
        # The kernel's overlay, mounted by root, as the floor: the layers' pages only.
        self.user = [] if impl == "kernel" else ASUSER
        if impl == "kernel":
            cmd = ["mount", "-t", "overlay", "overlay", "-o", opts, mp]
        elif impl.startswith("layerfs"):
            prog = os.path.join(CACHE, f"layerfs.{RUN}")  # the user may not reach target/
            if not os.path.exists(prog):
                shutil.copy(LAYERFS, prog)
                LEFTOVERS.append(prog)
            extra = impl.split("+", 1)[1] if "+" in impl else ""
            cmd = [prog, "-o", opts + ("," + extra if extra else ""), mp]
        else:
            cmd = ["fuse-overlayfs", "-o", opts, mp]
        subprocess.run(self.user + cmd, check=True, stdout=subprocess.DEVNULL)
        assert mounted(mp), f"{impl}: not mounted at {mp}"

    def run(self, cmd):
        t0 = time.perf_counter()
        # Only the user may enter the mount (no allow_other): the shell changes into it.
        subprocess.run(self.user + ["sh", "-c", f"cd {self.mp} && {cmd}"], cwd="/", check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0

    def close(self):
        subprocess.run(["umount", self.mp], check=True)


def rootless_impls():
    return [i for i in IMPLS if i.startswith("layerfs") or i in ("fuse-overlayfs", "kernel")]


def bench_rootless_pagecache(results):
    """Five rootless writable mounts of the stack (without the 2 GiB file), each read in full."""
    d, layers = rootless_stack()
    for impl in rootless_impls():
        cg = Charged()
        mounts = []
        try:
            drop_caches()
            before = cg.cache()
            for i in range(5):
                mounts.append(RootlessMount(impl, layers, os.path.join(d, f"scratch{i}.{RUN}"),
                                            f"{MNT}-rootless-{i}"))
                mounts[-1].run(TAR)
            grown = cg.cache() - before
        finally:
            for m in mounts:
                m.close()
            cg.close()
        results.setdefault(("rootless: page cache, 5 writable mounts read in full (MiB)", impl), []).append(grown)
        log(f"  rootless {impl:30} page cache +{grown:.0f} MiB")


def bench_rootless_reads(reps, results):
    """The read rows on rootless writable mounts. Cold: a fresh mount per impl after
    drop_caches, `reps` times. Warm: one live mount per impl, every impl in turn in each of
    `reps` rounds (order reversed every other round), so a change of machine load falls on
    all of them alike."""
    d, layers = rootless_stack()
    impls = rootless_impls()
    for impl in impls:
        for op, cmd in ROWS.items():
            for _ in range(reps):
                drop_caches()
                m = RootlessMount(impl, layers, os.path.join(d, f"scratch.{RUN}"), f"{MNT}-rootless")
                try:
                    results.setdefault((f"rootless: {op} (cold)", impl), []).append(m.run(cmd))
                finally:
                    m.close()
            log(f"  rootless {impl:30} {op:30} cold {statistics.median(results[(f'rootless: {op} (cold)', impl)]):.3f}s")
    mounts = {}
    try:
        for i, impl in enumerate(impls):
            mounts[impl] = RootlessMount(impl, layers, os.path.join(d, f"scratch{i}.{RUN}"),
                                         f"{MNT}-rootless-{i}")
            for cmd in ROWS.values():
                mounts[impl].run(cmd)  # warms it
        for k in range(reps):
            for op, cmd in ROWS.items():
                for impl in (impls if k % 2 == 0 else impls[::-1]):
                    results.setdefault((f"rootless: {op} (warm)", impl), []).append(mounts[impl].run(cmd))
    finally:
        for m in mounts.values():
            m.close()
    for impl in impls:
        log(f"  rootless {impl:30} warm " + ", ".join(
            f"{op} {statistics.median(results[(f'rootless: {op} (warm)', impl)]):.3f}s" for op in ROWS))
