"""kill-rank.py DIR RANK SIGNAL COMMAND...: runs COMMAND (kiln train --ranks
N), waits until DIR/run holds a checkpoint, sends SIGNAL to the rank
process RANK (the launcher's child whose RANK variable is RANK), and prints
the command's output and exit code. Killed after 60 s if still running."""
import os
import signal
import subprocess
import sys
import time

d, rank, sig = sys.argv[1], sys.argv[2], getattr(signal, "SIG" + sys.argv[3])
log = open(os.path.join(d, "kill-rank.log"), "w+")
launcher = subprocess.Popen(sys.argv[4:], stdout=log, stderr=subprocess.STDOUT)
latest = os.path.join(d, "run", "checkpoints", "latest")
deadline = time.time() + 60
while time.time() < deadline and not os.path.exists(latest):
    time.sleep(0.05)


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry))
        except OSError:
            pass
    return found


victim = None
for child in children(launcher.pid):
    try:
        env = open(f"/proc/{child}/environ", "rb").read().split(b"\0")
    except OSError:
        continue
    if f"RANK={rank}".encode() in env:
        victim = child
if victim is None:
    print("no rank process", rank)
else:
    os.kill(victim, sig)
try:
    code = launcher.wait(timeout=max(1, deadline - time.time()))
except subprocess.TimeoutExpired:
    launcher.kill()
    code = launcher.wait()
log.seek(0)
sys.stdout.write(log.read())
print("exit code", code)
