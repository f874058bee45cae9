"""The benchmark's Python peers (bench/peers.ts runs them): torch.save / torch.load and the official safetensors
package, on a state dict of the benchmark's layout (bench/layout.ts), each in a fresh process that times itself.

Usage:
  python peers.py versions
  python peers.py save {torch,torch-fsync,st,st-fsync} LAYOUT_JSON OUT_FILE
  python peers.py load {torch,st,st-touch,st-np} FILE BYTES

LAYOUT_JSON holds {"tensors": [{"name", "shape"}, ...]} (makeLayout's output). A save allocates and touches the
float32 tensors first, then resets the peak RSS (/proc/self/clear_refs) and times only the call (time.perf_counter).
"-fsync" variants open the file, save through it or after it, and os.fsync it before the clock stops (no temp file,
rename or directory fsync: less than a durable tfjs-checkpoint save does). A load times the call and reports the
peak RSS above its start minus the bytes loaded. safetensors.torch.load_file returns tensors over a memory map of
the file, read lazily on first use: `st-touch` also reads one float per 4 KiB page of every tensor inside the
timing (what the first use of the weights pays), `st` times the call alone. Prints one JSON line: {"ms", "baseRssKiB", "peakExtraKiB"?}.
No BLAS runs here (allocation, uniform_, serialization): thread counts are pinned to 1 anyway, so OPENBLAS_* / OMP_*
settings of the caller cannot change a figure.
"""
import json
import os
import re
import resource
import sys
import time

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"


def status(field):
    with open("/proc/self/status") as f:
        return int(re.search(r"^%s:\s+(\d+) kB" % field, f.read(), re.M).group(1))


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_kib(reset):
    # After a reset VmHWM is the peak since it; without one, getrusage's lifetime peak is all there is.
    return status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(mode, layout_file, out):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    with open(layout_file) as f:
        layout = json.load(f)
    sd = {t["name"]: torch.empty(t["shape"], dtype=torch.float32).uniform_(-0.1, 0.1) for t in layout["tensors"]}
    if mode.startswith("st"):
        from safetensors.torch import save_file
    reset = reset_peak()
    base = status("VmRSS")
    t0 = time.perf_counter()
    if mode == "torch":
        torch.save(sd, out)
    elif mode == "torch-fsync":
        with open(out, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())
    elif mode == "st":
        save_file(sd, out)
    elif mode == "st-fsync":
        save_file(sd, out)
        fsync_path(out)
    else:
        raise SystemExit("unknown save mode %r" % mode)
    ms = (time.perf_counter() - t0) * 1000
    return {"ms": ms, "baseRssKiB": base, "peakExtraKiB": max(0, peak_kib(reset) - base)}


def load(mode, path, nbytes):
    import torch

    torch.set_num_threads(1)
    if mode in ("st", "st-touch"):
        from safetensors.torch import load_file
    elif mode == "st-np":
        from safetensors.numpy import load_file as load_np
    reset = reset_peak()
    base = status("VmRSS")
    t0 = time.perf_counter()
    if mode == "torch":
        out = torch.load(path, weights_only=True)
    elif mode == "st":
        out = load_file(path)
    elif mode == "st-touch":
        out = load_file(path)
        for t in out.values():
            t.reshape(-1)[::1024].sum()  # one float per 4 KiB page: every page faulted in (read from disk when cold)
    elif mode == "st-np":
        out = load_np(path)
    else:
        raise SystemExit("unknown load mode %r" % mode)
    ms = (time.perf_counter() - t0) * 1000
    if not out:
        raise SystemExit("nothing loaded")
    extra = peak_kib(reset) - base - nbytes // 1024
    return {"ms": ms, "baseRssKiB": base, "peakExtraKiB": max(0, extra), "residentKiB": status("VmRSS") - base}


def versions():
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "safetensors", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError as e:
            out[name] = None
            out[name + "Error"] = str(e)
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "versions":
        r = versions()
    elif cmd == "save":
        r = save(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "load":
        r = load(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit("usage: see the top of bench/peers.py")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
