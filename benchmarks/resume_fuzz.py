"""Random command lines stopped and resumed: does ``--resume`` end where the run would have?

Draws training command lines as ``cli_fuzz.py`` does (same generator, ``--epochs`` at least 2),
and for each one:

1. runs it to its end (the reference);
2. runs it again and sends SIGTERM once its first epoch's checkpoint is written plus a drawn
   share of an epoch's time (the run finishes its step, writes ``checkpoints/last.pt`` and
   exits 143);
3. runs ``bayesprune train --resume`` on the stopped directory;

and compares the two ``model.pt`` files weight by weight, and the two summaries' status,
architecture and test error. The README promises the resumed run ends bitwise where the
uninterrupted one would (tested in ``tests/test_resume.py`` for three settings); this checks
it for the options those tests do not set. Verdicts: ``same``; ``differs`` (a defect);
``ended before the signal`` (the run had ended, or ended as the signal came: nothing to
compare); ``ignored the signal`` (a defect: the run finished, its last epoch's checkpoint
written after the signal was sent); ``refused`` (the reference line ended 2); ``not resumable``
with the reason (a defect): the reference ended otherwise than 0, 2 or 3, or without a
``model.pt``, or the stop or the resume ended another way than the README says, or a run
passed ``--timeout``.

Usage: ``.venv/bin/python benchmarks/resume_fuzz.py --seed 21 --count 24`` (about 10 minutes
on 2 cores).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_fuzz import BAYESPRUNE, command, fuzz_parser, last_line, verdict  # noqa: E402
from common import commit, cpu_model, write  # noqa: E402


def stoppable(rng: random.Random, out: Path) -> list[str]:
    """A ``cli_fuzz`` command line with at least two epochs (a one-epoch run has no epoch
    checkpoint before its end to stop after)."""
    while True:
        args = command(rng, out)
        if int(args[args.index("--epochs") + 1]) >= 2:
            return args


def same_model(a: Path, b: Path) -> tuple[bool, str]:
    """Whether two ``model.pt`` files hold the same layers and weights to the bit, and the
    first difference."""
    import torch

    ma, mb = (torch.load(p, weights_only=True) for p in (a, b))
    if ma["layers"] != mb["layers"]:
        return False, f"layers {ma['layers']} against {mb['layers']}"
    if set(ma["state_dict"]) != set(mb["state_dict"]):
        return False, f"weights {sorted(set(ma['state_dict']) ^ set(mb['state_dict']))}"
    for key, value in ma["state_dict"].items():
        other = mb["state_dict"][key]
        if other.shape != value.shape or not torch.equal(other, value):
            return False, f"weight {key}"
    return True, ""


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def check(args: list[str], delay: float, timeout: float) -> dict:
    """Reference run, stopped run and resume of one command line (``args`` ends with
    ``--out DIR``; the three runs write beside DIR)."""
    base = Path(args[-1])
    whole, stopped = base.with_name(base.name + "_whole"), base.with_name(base.name + "_stop")
    cmd = [str(BAYESPRUNE), *args[:-1]]
    shown = "bayesprune " + " ".join(args[: args.index("--out")])
    record = {"command": shown, "delay_epochs": delay}
    start = time.perf_counter()
    try:
        ref = subprocess.run([*cmd, str(whole)], capture_output=True, text=True,
                             timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {**record, "verdict": "not resumable", "defect": True, "reason": "timeout"}
    wall = time.perf_counter() - start
    record["reference_exit"] = ref.returncode
    if ref.returncode not in (0, 3) or not (whole / "model.pt").exists():
        # cli_fuzz's verdict: exit 2 is the program's answer, anything else here a defect
        refused = verdict(ref.returncode, ref.stderr) == "refused"
        record["verdict"] = "refused" if refused else "not resumable"
        record["reason"] = last_line(ref.stderr) or "no model.pt"
        record["defect"] = not refused
        return record
    epochs = int(args[args.index("--epochs") + 1])
    proc = subprocess.Popen([*cmd, str(stopped)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        first = stopped / "checkpoints" / "epoch_001.pt"
        deadline = time.time() + timeout
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        train = json.loads((whole / "summary.json").read_text()).get("train_wall_seconds")
        time.sleep(delay * (train or wall) / epochs)  # into the second epoch's steps
        if proc.poll() is not None:
            proc.communicate()
            return {**record, "verdict": "ended before the signal", "defect": False}
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {**record, "verdict": "not resumable", "defect": True, "reason": "timeout"}
    record["stop_exit"] = proc.returncode
    status = _status(stopped)
    if status in ("finished", "collapsed") and "Traceback" not in err:
        # the run had ended: as the signal came (exit 0 or 3), while its report was printed
        # (143, the summary final), or while Python shut down after its last line (killed by
        # the signal; README). Unless its last epoch's checkpoint is younger than the signal:
        # then it went on training after being told to stop
        last = stopped / "checkpoints" / f"epoch_{epochs:03d}.pt"
        ignored = last.exists() and last.stat().st_mtime > sent
        record.update(verdict="ignored the signal" if ignored else "ended before the signal",
                      defect=ignored)  # fmt: skip
        return record
    if proc.returncode != 128 + signal.SIGTERM or "Traceback" in err or status != "interrupted":
        return {**record, "verdict": "not resumable", "defect": True,
                "reason": f"status {status}: {last_line(err)}"}  # fmt: skip
    again = [str(BAYESPRUNE), "train", "--resume", str(stopped), "--no-progress", "--no-report"]
    try:
        res = subprocess.run(again, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**record, "verdict": "not resumable", "defect": True, "reason": "resume timeout"}
    record["resume_exit"] = res.returncode
    if res.returncode != ref.returncode or "Traceback" in res.stderr:
        return {**record, "verdict": "not resumable", "defect": True,
                "reason": last_line(res.stderr)}  # fmt: skip
    summaries = [json.loads((d / "summary.json").read_text()) for d in (whole, stopped)]
    keys = ("status", "architecture", "test_error")
    ok, where = same_model(whole / "model.pt", stopped / "model.pt")
    agree = all(summaries[0].get(k) == summaries[1].get(k) for k in keys)
    record["summaries"] = [{k: s.get(k) for k in keys} for s in summaries]
    record.update(verdict="same" if ok and agree else "differs", defect=not (ok and agree))
    if not ok:
        record["reason"] = where
    return record


def main(argv=None) -> dict:
    args = fuzz_parser(__doc__, 21, 24, "resume_fuzz").parse_args(argv)
    rng = random.Random(args.seed)
    label = commit()  # before the runs: a commit made while they run must not label them
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(stoppable(rng, Path(tmp) / f"run{i}"), rng.uniform(0.0, 1.0), args.timeout)
                for i in range(args.count)]  # fmt: skip
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda job: check(*job), jobs))
    for r in runs:
        print(f"{r['verdict']:24s} {r['command'][:140]}", flush=True)
    verdicts = ("same", "differs", "ended before the signal", "ignored the signal", "refused",
                "not resumable")
    counts = {v: sum(r["verdict"] == v for r in runs) for v in verdicts}
    counts["defects"] = sum(r["defect"] for r in runs)
    result = {"resume_fuzz": runs, "seed": args.seed, "counts": counts, "commit": label,
              "cpu": cpu_model()}  # fmt: skip
    write(args.name, result, args.results_dir)
    print(counts)
    return result


if __name__ == "__main__":
    main()
