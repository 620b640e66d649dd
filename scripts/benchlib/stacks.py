"""The layer stacks the rows mount, built once and cached in LAYERFS_BENCH_DIR."""

import os
import shutil
import subprocess

from .common import CACHE, MNT, Mount, log, sh, upper_extra

def build_real_stack():
    """Returns the layer dirs, top first."""
    base = os.path.join(CACHE, "real/base")
    debs = os.path.join(CACHE, "real/debs")
    wh = os.path.join(CACHE, "real/whiteouts")
    big = os.path.join(CACHE, "real/big")
    if not os.path.exists(base + ".done"):
        log("debootstrap --variant=minbase bookworm (once, cached)")
        shutil.rmtree(base, ignore_errors=True)
        sh(f"debootstrap --variant=minbase bookworm {base} >/dev/null")
        open(base + ".done", "w").close()
    if not os.path.exists(debs + ".done"):
        log("unpacking .deb files into a layer (once, cached)")
        shutil.rmtree(debs, ignore_errors=True)
        dl = os.path.join(CACHE, "real/deb-download")
        os.makedirs(dl, exist_ok=True)
        os.makedirs(debs, exist_ok=True)
        pkgs = "perl-modules-5.36 libperl5.36 vim-runtime python3.11-minimal libpython3.11-stdlib"
        sh(f"cd {dl} && apt-get download {pkgs} >/dev/null 2>&1")
        for f in sorted(os.listdir(dl)):
            sh(f"dpkg-deb -x {os.path.join(dl, f)} {debs}")
        open(debs + ".done", "w").close()
    if not os.path.exists(wh + ".done"):
        log("making the whiteout layer (once, cached)")
        shutil.rmtree(wh, ignore_errors=True)
        # Whiteouts (kernel form, which all three read) for every entry of usr/share/doc
        # and usr/share/locale except a few; an opaque usr/share/zoneinfo with one file.
        for sub in ["usr/share/doc", "usr/share/locale"]:
            os.makedirs(os.path.join(wh, sub), exist_ok=True)
            names = sorted(os.listdir(os.path.join(base, sub)))
            for n in names[3:]:
                os.mknod(os.path.join(wh, sub, n), 0o600 | 0o020000, 0)
        z = os.path.join(wh, "usr/share/zoneinfo")
        os.makedirs(z, exist_ok=True)
        sh(f"setfattr -n trusted.overlay.opaque -v y {z}")
        with open(os.path.join(z, "UTC"), "w") as f:
            f.write("opaque replacement\n")
        open(wh + ".done", "w").close()
    if not os.path.exists(big + ".done"):
        log("writing a 2 GiB file layer (once, cached)")
        os.makedirs(big, exist_ok=True)
        sh(f"head -c 2G /dev/urandom > {big}/big.bin")
        open(big + ".done", "w").close()
    return [big, wh, debs, base]


def files_per_layer(n):
    """Enough files that 300 lookups hit 300 distinct ones, whatever the depth."""
    return max(3, -(-600 // n))


def build_deep(n):
    d = os.path.join(CACHE, f"deep{n}-v2")
    if os.path.exists(d + ".done"):
        return d
    log(f"making a {n}-layer stack (once, cached)")
    shutil.rmtree(d, ignore_errors=True)
    for i in range(n):
        lib = os.path.join(d, str(i), "usr/lib")
        os.makedirs(lib)
        for j in range(files_per_layer(n)):
            with open(os.path.join(lib, f"lib{i}-{j}.so"), "w") as f:
                f.write("x")
        os.makedirs(os.path.join(d, str(i), f"etc/conf{i}"))
    open(d + ".done", "w").close()
    return d


def build_write_stack():
    """The lower layer and tarball of the write benchmarks (cached): 1000 one-line files, a
    1 GiB file, a tree of 1,400 entries; a tar of 20,000 small files in 100 directories."""
    d = os.path.join(CACHE, "write-v1")
    lower, tar = os.path.join(d, "lower"), os.path.join(d, "small.tar")
    if os.path.exists(d + ".done"):
        return lower, tar
    log("making the write-benchmark layer and tarball (once, cached)")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(lower, "files"))
    for i in range(1000):
        with open(os.path.join(lower, f"files/f{i:04}"), "w") as f:
            f.write(f"line {i}\n")
    os.makedirs(os.path.join(lower, "big"))
    sh(f"head -c 1G /dev/urandom > {lower}/big/1g.bin")
    for i in range(100):  # 100 directories + 1,300 files
        sub = os.path.join(lower, f"tree/d{i:03}")
        os.makedirs(sub)
        for j in range(13):
            with open(os.path.join(sub, f"f{j:02}"), "w") as f:
                f.write("x" * (j * 100))
    src = os.path.join(d, "small")
    for i in range(100):
        sub = os.path.join(src, f"d{i:03}")
        os.makedirs(sub)
        for j in range(200):
            with open(os.path.join(sub, f"f{j:03}"), "w") as f:
                f.write(f"{i} {j}\n" * 10)
    sh(f"tar cf {tar} -C {src} .")
    shutil.rmtree(src)
    open(d + ".done", "w").close()
    return lower, tar


PY_IMPORTS = ("json, email, http.client, sqlite3, ssl, decimal, asyncio, xml.etree.ElementTree, "
              "urllib.request, logging, argparse, subprocess, hashlib, zlib, ctypes")


def build_python_layer(layers):
    """A layer completing python3.11 over the real stack (cached): the libraries it lacks
    in the base, and bytecode of the standard library compiled by that python3.11 in a
    chroot of the stack (the upper of that mount gives the .pyc files)."""
    cwd = os.path.dirname(layers[0])
    layer = os.path.join(cwd, "python-v1")
    if os.path.exists(layer + ".done"):
        return layer
    log("making the python layer (once, cached)")
    shutil.rmtree(layer, ignore_errors=True)
    dl = os.path.join(cwd, "python-v1-download")
    shutil.rmtree(dl, ignore_errors=True)
    os.makedirs(dl)
    os.makedirs(layer)
    sh(f"cd {dl} && apt-get download libexpat1 libpython3.11-minimal libsqlite3-0 libssl3 "
       "media-types >/dev/null 2>&1")
    for f in sorted(os.listdir(dl)):
        sh(f"dpkg-deb -x {os.path.join(dl, f)} {layer}")
    # The base is merged-/usr: a real lib/ here would hide its lib -> usr/lib link.
    for top in ["lib", "lib64", "bin", "sbin"]:
        src = os.path.join(layer, top)
        if os.path.isdir(src) and not os.path.islink(src):
            sh(f"mkdir -p {layer}/usr/{top} && cp -a {src}/. {layer}/usr/{top}/ && rm -rf {src}")
    rel = [os.path.basename(x) for x in layers]
    stack = rel[:2] + [os.path.basename(layer)] + rel[2:]
    extra = upper_extra(cwd)
    m = Mount("kernel", stack, cwd, MNT, extra)
    try:
        # Some test data does not compile; compileall then exits 1.
        subprocess.run(["chroot", MNT, "/usr/bin/python3.11", "-m", "compileall", "-q",
                        "/usr/lib/python3.11"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        m.close()
    upper = os.path.join(cwd, extra.split("upperdir=")[1].split(",")[0])
    n = 0
    for d, _dirs, files in os.walk(upper):
        for f in files:
            if f.endswith(".pyc") and os.path.basename(d) == "__pycache__":
                dst = os.path.join(layer, os.path.relpath(d, upper))
                os.makedirs(dst, exist_ok=True)
                shutil.copy2(os.path.join(d, f), dst)
                n += 1
    assert n > 500, f"only {n} .pyc files compiled"
    shutil.rmtree(dl)
    open(layer + ".done", "w").close()
    return layer


INSTALL_PKGS = "perl less hello"


def build_install_debs(base):
    """The .deb files `apt-get install INSTALL_PKGS` needs over `base` (cached): resolved and
    downloaded by the base's own apt in a chroot of a kernel overlay mount."""
    d = os.path.join(CACHE, "install-v1")
    debs = os.path.join(d, "debs")
    if os.path.exists(d + ".done"):
        return debs
    log(f"downloading {INSTALL_PKGS} and what they need over the base (once, cached)")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(debs)
    extra = upper_extra(d)
    upper = os.path.join(d, extra.split("upperdir=")[1].split(",")[0])
    m = Mount("kernel", [base], d, MNT, extra)
    try:
        sh(f"chroot {MNT} apt-get install -y -qq --download-only --no-install-recommends "
           f"{INSTALL_PKGS} >/dev/null")
    finally:
        m.close()
    archives = os.path.join(upper, "var/cache/apt/archives")
    for f in sorted(os.listdir(archives)):
        if f.endswith(".deb"):
            shutil.copy2(os.path.join(archives, f), debs)
    assert any(f.startswith("hello_") for f in os.listdir(debs)), "no hello .deb downloaded"
    open(d + ".done", "w").close()
    return debs
