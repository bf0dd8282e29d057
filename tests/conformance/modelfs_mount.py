# // clang-format off   <- not C++
"""A `modelfs mount -f` for the conformance scripts: a fresh store (or a given one), the mount
point in a temporary folder, the daemon's log beside it; stop() always unmounts (fusermount3 -u,
then -uz) and reaps the daemon, whatever happened."""

import os
import subprocess
import time


def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == mnt and "fuse.modelfs" in line:
                return True
    return False


def modelfs_env():
    return dict(os.environ, MODELFS_CONFIG="/dev/null")


class Mount:
    def __init__(self, modelfs, tmp, view=None, store=None, init=True, tag="mnt"):
        self.modelfs = modelfs
        self.store = store or os.path.join(tmp, "store")
        self.mnt = os.path.join(tmp, tag)
        self.logpath = os.path.join(tmp, tag + ".log")
        os.makedirs(self.mnt, exist_ok=True)
        if init and not os.path.exists(os.path.join(self.store, "catalog")):
            subprocess.run([modelfs, "--store", self.store, "init"], check=True,
                           env=modelfs_env(), stdout=subprocess.DEVNULL)
        args = [modelfs, "--store", self.store, "-v", "mount", self.mnt, "-f"]
        if view:
            args += ["--view", view]
        with open(self.logpath, "a") as logfile:
            self.proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=modelfs_env())
        for _ in range(400):
            if is_mounted(self.mnt) or self.proc.poll() is not None:
                break
            time.sleep(0.025)
        if not is_mounted(self.mnt):
            self.stop()
            raise RuntimeError("the mount did not come up:\n" + self.log_text())

    def alive(self):
        return self.proc.poll() is None and is_mounted(self.mnt)

    def log_text(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def print_log(self, lines=60):
        text = self.log_text().splitlines()
        print(f"--- last {min(lines, len(text))} lines of the daemon's log {self.logpath} ---")
        print("\n".join(text[-lines:]))
        print("--- end of log ---", flush=True)

    def stop(self):
        """Unmounts and reaps the daemon; returns its exit code (None: it had to be killed)."""
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
            for _ in range(250):
                if not is_mounted(self.mnt):
                    break
                time.sleep(0.02)
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
        if self.proc.returncode is not None:
            return self.proc.returncode
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
