"""torch.save of a state dict with the benchmark's layout (bench/layout.ts), for the save-throughput table.

Usage: python3 torch_save.py LAYOUT_JSON OUT_FILE
LAYOUT_JSON holds {"tensors": [{"name", "shape"}, ...]}. Prints one JSON line: {"ms", "peakExtraKiB"}.
torch.save does not fsync: it is a page-cache row. The tensors are allocated and touched first, then the peak RSS is
reset (/proc/self/clear_refs), as in the Node children.
"""
import json
import re
import sys
import time


def status(field):
    with open("/proc/self/status") as f:
        return int(re.search(r"^%s:\s+(\d+) kB" % field, f.read(), re.M).group(1))


def main():
    import torch

    with open(sys.argv[1]) as f:
        layout = json.load(f)
    sd = {}
    for t in layout["tensors"]:
        sd[t["name"]] = torch.empty(t["shape"], dtype=torch.float32).uniform_(-0.1, 0.1)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    base = status("VmRSS")
    t0 = time.perf_counter()
    torch.save(sd, sys.argv[2])
    ms = (time.perf_counter() - t0) * 1000
    out = {"ms": ms}
    if reset:
        out["peakExtraKiB"] = status("VmHWM") - base
    print(json.dumps(out))


if __name__ == "__main__":
    main()
