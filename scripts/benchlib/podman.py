"""podman in a throwaway store of its own (overlay driver, optionally with a mount_program),
with the containers.conf this kind of machine needs (CONTRACTS §4)."""

import os
import subprocess
import time

from .common import sh

CONF = """[containers]
netns = "host"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def timed(cmd, env=None, prefix=()):
    t0 = time.perf_counter()
    subprocess.run([*prefix, *cmd], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - t0


class Podman:
    """`podman --root D/graph --runroot D/run --storage-driver overlay`, D = TMP/SHORT (podman
    refuses a runroot over 50 characters), the image tarball BASE_TAR imported as `debian`."""

    def __init__(self, tmp, name, short, base_tar, mount_program=None, env=None):
        self.name = name
        self.dir = os.path.join(tmp, short)
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "containers.conf"), "w") as f:
            f.write(CONF)
        self.env = dict(os.environ, **(env or {}),
                        CONTAINERS_CONF=os.path.join(self.dir, "containers.conf"))
        self.args = ["podman", "--root", os.path.join(self.dir, "graph"), "--runroot",
                     os.path.join(self.dir, "run"), "--storage-driver", "overlay"]
        if mount_program:
            self.args += ["--storage-opt", f"overlay.mount_program={mount_program}"]
        sh(" ".join(self.args) + f" import {base_tar} debian >/dev/null", env=self.env)

    def build(self, ctx, cold, prefix=()):
        """Wall time of one `podman build` of CTX (--no-cache when COLD); PREFIX: a command
        to run podman under (strace)."""
        return timed([*self.args, "build", "--pull=never", "--network", "host", "-t", "bench",
                      *(["--no-cache"] if cold else []), ctx], env=self.env, prefix=prefix)

    def reset(self):
        subprocess.run([*self.args, "system", "reset", "-f"], capture_output=True, env=self.env)
