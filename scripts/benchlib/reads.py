"""Read rows: the real stack's workloads, mount + first stat, python start, deep stacks."""

import os
import statistics
import subprocess
import sys
import time

from .common import (CACHE, IMPLS, KERNEL_MAX_LOWERS, LEFTOVERS, MNT, RUN, Mount, drop_caches,
                     fresh_upper, log, meminfo, mount_cmd, mountpoint, timed, upper_extra)
from .stacks import PY_IMPORTS, build_deep, build_python_layer, files_per_layer

REAL_OPS = {
    "find": "find . >/dev/null",
    "ls -lR": "ls -lR >/dev/null",
    "tar c": "tar c --exclude=./big.bin . | cat >/dev/null",
    "read 2 GiB": "cat big.bin >/dev/null",
}


def cold_warm(kind, impl, stack, cwd, mp, op, cmd, reps, results):
    """`cmd` on a fresh mount of `stack` after dropping the caches (cold), then again on the
    same mount (warm); a fresh empty upper per mount on the writable kind."""
    for _ in range(reps):
        extra = upper_extra(cwd) if kind == "rw" else ""
        drop_caches()
        m = Mount(impl, stack, cwd, mp, extra)
        try:
            cold = timed(cmd, mp)
            warm = timed(cmd, mp)
        finally:
            m.close()
        results.setdefault((f"{kind}: {op} (cold)", impl), []).append(cold)
        results.setdefault((f"{kind}: {op} (warm)", impl), []).append(warm)
    log(f"  {kind} {impl:15} {op:11} cold {statistics.median(results[(f'{kind}: {op} (cold)', impl)]):.3f}s"
        f"  warm {statistics.median(results[(f'{kind}: {op} (warm)', impl)]):.3f}s")


def bench_real(layers, reps, results, kinds):
    cwd = os.path.dirname(layers[0])
    rel = [os.path.basename(x) for x in layers]
    mp = MNT
    for kind in kinds:
        for impl in IMPLS:
            for op, cmd in REAL_OPS.items():
                cold_warm(kind, impl, rel, cwd, mp, op, cmd, reps, results)


def count_requests(impl, lowers, cwd, ops, kinds, rows):
    """Requests per workload (cold, and warm = cold+warm minus cold), into `rows`."""
    mp = MNT
    counts = os.path.join(CACHE, f"requests.{RUN}.txt")
    LEFTOVERS.append(counts)
    for kind in kinds:
        for op, (setup, cmd) in ops.items():
            got = []
            for runs in [1, 2]:
                extra = upper_extra(cwd) if kind == "rw" else ""
                drop_caches()
                m = Mount(impl, lowers, cwd, mp, extra, counts=counts)
                try:
                    if setup:
                        timed(setup, mp)
                    for _ in range(runs):
                        timed(cmd, mp)
                finally:
                    m.close()
                got.append(m.requests())
            cold, both = got
            warm = {k: both.get(k, 0) - cold.get(k, 0) for k in both}
            for when, c in [("cold", cold), ("warm", warm)]:
                top = sorted(((v, k) for k, v in c.items() if k != "total" and v), reverse=True)
                rows.append((f"{kind}: {op} ({when})", c.get("total", 0),
                             ", ".join(f"{k} {v}" for v, k in top[:6])))
            log(f"  {kind} {op}: cold {cold.get('total')} warm {warm.get('total')}")


def bench_pagecache(layers, results):
    """Five writable mounts of the real stack, each read in full: page cache growth."""
    cwd = os.path.dirname(layers[0])
    rel = [os.path.basename(x) for x in layers]
    for impl in IMPLS:
        drop_caches()
        before = meminfo("Cached")
        mounts = []
        try:
            for i in range(5):
                scratch = os.path.basename(fresh_upper(cwd, f"scratch{i}"))
                mp = f"{MNT}-{i}"
                mounts.append(Mount(impl, rel, cwd, mp,
                                    f",upperdir={scratch}/upper,workdir={scratch}/work"))
                timed("tar c --exclude=./big.bin . | cat >/dev/null", mp)
            grown = meminfo("Cached") - before
        finally:
            for m in mounts:
                m.close()
        results.setdefault(("page cache growth, 5 writable mounts read in full (MiB)", impl), []).append(grown)
        log(f"  {impl:15} page cache +{grown:.0f} MiB")


def bench_deep(sizes, reps, results):
    mp = MNT
    for n in sizes:
        d = build_deep(n)
        lowers = [str(i) for i in range(n)]
        # 300 distinct existing files spread evenly over the layers, and 300 names that
        # exist nowhere.
        every = [f"usr/lib/lib{i}-{j}.so" for i in range(n) for j in range(files_per_layer(n))]
        hits = [every[k * len(every) // 300] for k in range(300)]
        assert len(set(hits)) == 300
        misses = [f"usr/lib/missing-{k}.so" for k in range(300)]
        script = os.path.join(CACHE, "lstat.py")
        with open(script, "w") as f:
            f.write("import os,sys\nfor p in sys.argv[1:]:\n    try: os.lstat(p)\n    except FileNotFoundError: pass\n")
        for impl in IMPLS:
            if impl == "kernel" and n > KERNEL_MAX_LOWERS:
                continue
            for _ in range(reps):
                for what, paths in [("300 cold lstats", hits), ("300 cold misses", misses)]:
                    drop_caches()
                    m = Mount(impl, lowers, d, mp)
                    try:
                        # Time only the lstats, not the interpreter start.
                        t = subprocess.run([sys.executable, "-c",
                                            "import os,sys,time\nt=time.perf_counter()\n"
                                            "for p in sys.argv[1:]:\n"
                                            "    try: os.lstat(p)\n"
                                            "    except FileNotFoundError: pass\n"
                                            "print(time.perf_counter()-t)"] + paths,
                                           cwd=mp, check=True, capture_output=True, text=True)
                        results.setdefault((f"{what}, {n} layers", impl), []).append(float(t.stdout))
                    finally:
                        m.close()
                drop_caches()
                m = Mount(impl, lowers, d, mp)
                m.close()
                results.setdefault((f"mount, {n} layers", impl), []).append(m.mount_time)
            log(f"  {impl:15} {n:4} layers: lstat {statistics.median(results[(f'300 cold lstats, {n} layers', impl)])*1000:.1f}ms"
                f" miss {statistics.median(results[(f'300 cold misses, {n} layers', impl)])*1000:.1f}ms"
                f" mount {statistics.median(results[(f'mount, {n} layers', impl)])*1000:.1f}ms")


def bench_deep_find(n, reps, results, kinds):
    d = build_deep(n)
    lowers = [str(i) for i in range(n)]
    for kind in kinds:
        for impl in IMPLS:
            if impl == "kernel" and n > KERNEL_MAX_LOWERS:
                continue
            for _ in range(reps):
                extra = upper_extra(d) if kind == "rw" else ""
                drop_caches()
                m = Mount(impl, lowers, d, MNT, extra)
                try:
                    cold = timed("find . >/dev/null", MNT)
                    warm = timed("find . >/dev/null", MNT)
                finally:
                    m.close()
                results.setdefault((f"{kind}: find, {n} layers (cold)", impl), []).append(cold)
                results.setdefault((f"{kind}: find, {n} layers (warm)", impl), []).append(warm)
            log(f"  {kind} {impl:15} find {n} layers: cold "
                f"{statistics.median(results[(f'{kind}: find, {n} layers (cold)', impl)])*1000:.1f}ms warm "
                f"{statistics.median(results[(f'{kind}: find, {n} layers (warm)', impl)])*1000:.1f}ms")


PY_OP = "python3 start + imports (chroot)"
PY_CMD = f"chroot . /usr/bin/python3.11 -c 'import {PY_IMPORTS}'"
DEEP_FIND = 128  # layers


def python_stack(layers):
    """The directory of the layers and the python row's stack in it, top first: the real
    stack with the python layer below the whiteouts."""
    layer = build_python_layer(layers)
    rel = [os.path.basename(x) for x in layers]
    return os.path.dirname(layers[0]), rel[:2] + [os.path.basename(layer)] + rel[2:]


def bench_python(layers, reps, results, kinds):
    """python3.11 start + imports in a chroot of the real stack plus the python layer."""
    cwd, stack = python_stack(layers)
    cmd, op = PY_CMD, PY_OP
    for kind in kinds:
        for impl in IMPLS:
            cold_warm(kind, impl, stack, cwd, MNT, op, cmd, reps, results)


def mount_and_stat(impl, lowers, cwd, extra, path):
    """Seconds from starting the mount command to the first successful stat of `path`."""
    cmd = mount_cmd(impl, lowers, mountpoint(MNT), extra)
    target = os.path.join(MNT, path)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after_exit = 0
    while True:
        try:
            os.stat(target)
            break
        except FileNotFoundError:
            if p.poll() is not None:
                after_exit += 1
                if p.returncode or after_exit > 10000:
                    raise RuntimeError(f"{impl}: exit {p.returncode}, and no {target}")
            os.sched_yield()
    t = time.perf_counter() - t0
    p.wait()
    subprocess.run(["umount", MNT], check=True)
    return t


def bench_mount_stat(layers, reps, results, kinds):
    cwd = os.path.dirname(layers[0])
    rel = [os.path.basename(x) for x in layers]
    path = "etc/debian_version"  # in the bottom layer
    for kind in kinds:
        for impl in IMPLS:
            row = (f"{kind}: mount + first stat", impl)
            for i in range(reps + 1):
                t = mount_and_stat(impl, rel, cwd, upper_extra(cwd) if kind == "rw" else "", path)
                if i:  # the first one only warms the caches
                    results.setdefault(row, []).append(t)
            log(f"  {kind} {impl:15} mount + first stat {statistics.median(results[row])*1000:.1f}ms")
