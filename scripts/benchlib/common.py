"""What every benchmark row uses: paths, mounts, uppers, timing."""

import atexit
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("LAYERFS_BENCH_DIR", "/var/tmp/layerfs-bench")
# LAYERFS_BIN: a layerfs binary built elsewhere (then nothing is built here).
LAYERFS = os.environ.get("LAYERFS_BIN", os.path.join(ROOT, "target/release/layerfs"))
# LAYERFS_BIN_BEFORE: another layerfs binary (the code before a change), measured in the
# same run as impl "layerfs-before" (`--impls kernel,layerfs,layerfs-before`), so a change
# is judged against its base under the same machine load.
LAYERFS_BEFORE = os.environ.get("LAYERFS_BIN_BEFORE")
IMPLS = ["kernel", "layerfs", "fuse-overlayfs"]  # --impls replaces its contents
KERNEL_MAX_LOWERS = 500  # OVL_MAX_STACK
# This run's mount point and upper directory names: LAYERFS_BENCH_DIR is shared.
RUN = str(os.getpid())
MNT = os.path.join(CACHE, f"mnt.{RUN}")
LEFTOVERS = []  # directories (and files) removed at exit


@atexit.register
def _cleanup():
    for d in reversed(LEFTOVERS):
        if os.path.isfile(d):
            os.unlink(d)
        elif not os.path.ismount(d):
            shutil.rmtree(d, ignore_errors=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_tools():
    need = [p for p, b in [("fuse3", "fusermount3"), ("fuse-overlayfs", "fuse-overlayfs"),
                           ("debootstrap", "debootstrap"), ("attr", "setfattr")] if not shutil.which(b)]
    if need:
        log(f"installing {' '.join(need)}")
        sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
           + " ".join(need) + " >/dev/null")
    if "LAYERFS_BIN" not in os.environ:
        log("building layerfs (release)")
        sh(f"cd {ROOT} && cargo build --release --quiet")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def mounted(mp):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mp for line in f)


def mount_cmd(impl, lowers, mp, extra=""):
    """The command mounting `lowers` at `mp` with one implementation."""
    low = ":".join(lowers)
    if impl == "kernel":
        if len(lowers) < 2 and "upperdir=" not in extra:
            low += ":" + os.path.join(CACHE, "empty")
            os.makedirs(os.path.join(CACHE, "empty"), exist_ok=True)
        return ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={low}{extra}", mp]
    if impl == "layerfs-before":
        assert LAYERFS_BEFORE, "impl layerfs-before needs LAYERFS_BIN_BEFORE=PATH"
        return [LAYERFS_BEFORE, "-o", f"lowerdir={low}{extra}", mp]
    if impl == "layerfs-io_uring":
        # Served over FUSE-over-io_uring (enable_uring_for_run switches the kernel's on).
        return [LAYERFS, "-o", f"lowerdir={low}{extra},io_uring", mp]
    if impl == "layerfs-dev_fuse":
        # Served over /dev/fuse reads even where the kernel offers the rings (plain
        # "layerfs" follows the kernel: the rings when enable_uring is on).
        return [LAYERFS, "-o", f"lowerdir={low}{extra},noio_uring", mp]
    if impl.startswith("layerfs"):
        # "layerfs-cached" etc. select a --file-io mode.
        mode = ["--file-io", impl.split("-", 1)[1]] if "-" in impl else []
        return [LAYERFS, *mode, "-o", f"lowerdir={low}{extra}", mp]
    return ["fuse-overlayfs", "-o", f"lowerdir={low}{extra}", mp]


ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def enable_uring_for_run():
    """Switches the kernel's FUSE-over-io_uring on for this run (impl layerfs-io_uring) and
    back to what it was at exit. layerfs's default follows it: plain "layerfs" then serves
    over the rings too; "layerfs-dev_fuse" (-o noio_uring) keeps /dev/fuse reads."""
    with open(ENABLE_URING) as f:
        was = "1" if f.read().strip() in ("Y", "1") else "0"

    def restore():
        with open(ENABLE_URING, "w") as f:
            f.write(was)
    atexit.register(restore)
    with open(ENABLE_URING, "w") as f:
        f.write("1")


def mountpoint(mp):
    if mp not in LEFTOVERS:
        LEFTOVERS.append(mp)
    os.makedirs(mp, exist_ok=True)
    return mp


class Mount:
    """Mounts `lowers` (relative to `cwd`) with one implementation; the mount command
    returns once the mount is live for all three (the FUSE ones daemonize after mounting)."""

    def __init__(self, impl, lowers, cwd, mp, extra="", counts=None):
        self.impl, self.mp, self.counts = impl, mountpoint(mp), counts
        cmd = mount_cmd(impl, lowers, mp, extra)
        env = dict(os.environ)
        if counts and impl.startswith("layerfs"):
            if os.path.exists(counts):
                os.unlink(counts)
            env["LAYERFS_REQUEST_COUNTS"] = counts
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.mount_time = time.perf_counter() - t0
        assert mounted(mp), f"{impl}: not mounted at {mp}"

    def close(self):
        subprocess.run(["umount", self.mp], check=True)

    def requests(self):
        """The daemon's request counts ({opcode: n}), once it has exited."""
        for _ in range(12000):  # up to 2 minutes: a daemon drops its nodes before exiting
            if os.path.exists(self.counts):
                with open(self.counts) as f:
                    return {k: int(v) for k, v in (line.split() for line in f)}
            time.sleep(0.01)
        raise RuntimeError(f"{self.impl}: no request counts in {self.counts}")


def fresh_upper(cwd, name="scratch"):
    """A fresh empty upper and workdir in `cwd`/`name`.RUN; returns that directory."""
    scratch = os.path.join(cwd, f"{name}.{RUN}")
    if scratch not in LEFTOVERS:
        LEFTOVERS.append(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(os.path.join(scratch, "upper"))
    os.makedirs(os.path.join(scratch, "work"))
    return scratch


def upper_extra(cwd):
    """A fresh empty upper and workdir next to the lowers; the mount option suffix."""
    scratch = os.path.basename(fresh_upper(cwd))
    return f",upperdir={scratch}/upper,workdir={scratch}/work"


def timed(cmd, cwd):
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def meminfo(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)
