"""One command that checks the GPU paths on a machine with one GPU, in at most 8 minutes:

    site=$(mktemp -d) && tar -xJf .device/site.tar.xz -C "$site" && export PYTHONPATH="$site:$PWD"
    python benchmarks/gpu_check.py            # from the repository root; exit status 1 if a check failed

Ray and Optuna come from the archive ../shared/device/make-bundle.sh builds; the project runs from
this checkout (PYTHONPATH), on the machine's torch (2.11 or newer). Offline only: digits and
generated images, from-scratch models (no weights are downloaded). On a machine without a GPU it
says so and exits 0.

Checks, each on its own (one failing, or running past its time, does not stop the others):
  (a) a search with 4 trials per GPU (--gpus-per-trial 0.25) completes, with every epoch recorded
      on cuda, in the GPU's native precision, under its memory cap;
  (b) trials per hour at 1, 2 and 4 trials per GPU on the same fixed configurations;
  (c) training images per second in bf16 (fp16 below compute capability 8.0) and in fp32 through
      the trainable's step, against a bare PyTorch loop on the same model with the data on the GPU;
  (d) a real out-of-memory error (the process's memory cap set below the full batch's need)
      halves the micro-batch, and the trial completes (in a child process: the cap stays there);
  (e) retrain and predict of (a)'s run on cuda.
The figures go to benchmarks/RESULTS.md, whose "GPU check" section is replaced each run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
RESULTS = REPO / "benchmarks" / "RESULTS.md"
START, END = "<!-- gpu_check: start -->", "<!-- gpu_check: end -->"
TOTAL_BUDGET_S = 450  # of the 8 minutes; the rest is Python, torch and Ray starting
# Seconds each check may take before it is stopped and counted as failed.
BUDGETS = {"a": 110, "b": 150, "c": 60, "d": 60, "e": 60}
SCRATCH = {"model": "scratch_resnet", "weights": "none", "conv_blocks": 3, "base_width": 32, "batch_size": 128, "optimizer": "adam", "lr": 3e-3}


class CheckTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise CheckTimeout(f"ran past its {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU is visible (torch {torch.__version__}): nothing to check here; "
              "run it on a machine with one GPU. Exit 0.")  # fmt: skip
        return 0
    try:
        import optuna  # noqa: F401
        import ray
    except ImportError as error:
        print(f"FAIL setup: {error}: put the archive of ../shared/device/make-bundle.sh on PYTHONPATH (see this file's header)")
        return 1

    from trainables.gpu import precision_for

    name = torch.cuda.get_device_name(0)
    capability = torch.cuda.get_device_capability(0)
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    native = precision_for("cuda", capability)
    print(f"gpu_check: {name}, compute capability {capability[0]}.{capability[1]}, {total_gib:.1f} GiB, "
          f"native precision {native}; torch {torch.__version__}, ray {ray.__version__}")  # fmt: skip
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    from search.ray_session import start_local

    start_local(logging_level="warning", log_to_driver=False, num_cpus=max(4, os.cpu_count() or 4))  # loopback only
    outcomes: dict[str, tuple[bool, list[str]]] = {}
    state: dict = {"work": work, "native": native, "name": name}
    checks = [("a", check_a), ("b", check_b), ("c", check_c), ("d", check_d), ("e", check_e)]
    try:
        for key, check in checks:
            left = TOTAL_BUDGET_S - (time.monotonic() - started)
            budget = int(min(BUDGETS[key], left))
            if budget < 15:
                outcomes[key] = (False, [f"not run: the 8-minute budget was spent ({time.monotonic() - started:.0f} s)"])
            else:
                outcomes[key] = run_check(key, check, state, budget)
            ok, lines = outcomes[key]
            print(f"{'PASS' if ok else 'FAIL'} ({key}) " + ("\n      ".join(lines) if lines else ""), flush=True)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
    seconds = time.monotonic() - started
    failed = [k for k, (ok, _) in outcomes.items() if not ok]
    print(f"gpu_check: {len(outcomes) - len(failed)} of {len(outcomes)} checks passed in {seconds:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    with contextlib.suppress(Exception):
        write_results(outcomes, name, capability, total_gib, native, seconds, torch.__version__, ray.__version__)
        print(f"gpu_check: figures written to {RESULTS.relative_to(REPO)} (section \"GPU check\")")
    return 1 if failed else 0


def run_check(key: str, check, state: dict, budget: int) -> tuple[bool, list[str]]:
    import torch

    state["budget"] = budget
    try:
        with time_limit(budget):
            return check(state)
    except BaseException as error:  # noqa: BLE001  a failing check never stops the others
        if isinstance(error, KeyboardInterrupt):
            raise
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        return False, [f"{last[:400]}"]
    finally:
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()


def _space(path: Path, configs: list[dict]) -> Path:
    """A space whose trial k gets configs[k % len(configs)] (as benchmarks/_common.fixed_space)."""
    path.write_text(f"REPEATS = 'allow'  # trial k is configs[k]: no sampler proposal to compare\n_CONFIGS = {configs!r}\n\ndef space(trial):\n    return dict(_CONFIGS[trial.number % len(_CONFIGS)])\n")
    return path


def _search(work: Path, name: str, configs: list[dict], trials: int, per_gpu: int, epochs: int = 2) -> tuple[Path, float]:
    from search.config.settings import settings_from_mapping
    from search.config.spaces import load_space
    from search.engine import gpu_share, run_search

    space = load_space(_space(work / f"{name}.py", configs))
    settings = settings_from_mapping(
        {"dataset": "digits", "image_size": 32, "trials": trials, "max_epochs": epochs, "scheduler": "fifo",
         "sampler": "random", "gpus_per_trial": gpu_share(per_gpu), "cpus_per_trial": 1.0, "concurrency": per_gpu,
         "storage": str(work), "name": name},
        "gpu_check",
    )  # fmt: skip
    begun = time.perf_counter()
    run_dir = run_search(space, settings, out=lambda line: None)
    return run_dir, time.perf_counter() - begun


def check_a(state: dict) -> tuple[bool, list[str]]:
    """4 trials per GPU: every trial completes, every epoch on cuda, native precision, under the cap."""
    import torch

    configs = [SCRATCH | {"base_width": w, "conv_blocks": b} for w, b in [(32, 3), (64, 2), (16, 3), (32, 2)]]
    run_dir, seconds = _search(state["work"], "four_per_gpu", configs, trials=8, per_gpu=4)
    state["run_a"] = run_dir
    return verdict_a(run_dir, seconds, 0.25 * torch.cuda.get_device_properties(0).total_memory / 2**20, state)


def verdict_a(run_dir: Path, seconds: float, cap_mib: float, state: dict) -> tuple[bool, list[str]]:
    from analysis.records import read_trials

    records = read_trials(run_dir)
    problems = []
    for record in records:
        status = record.status.get("status", "")
        if status != "completed":
            problems.append(f"trial {record.trial_id}: {status} {record.status.get('error', '')[:200]}")
        for epoch in record.metrics:
            if not str(epoch.get("device", "")).startswith("cuda:"):
                problems.append(f"trial {record.trial_id} epoch {epoch.get('epoch')}: device {epoch.get('device')!r}")
            if epoch.get("precision") != state["native"]:
                problems.append(f"trial {record.trial_id}: precision {epoch.get('precision')!r}, expected {state['native']}")
            if not 0 < epoch.get("peak_memory_mb", 0) <= cap_mib:
                problems.append(f"trial {record.trial_id}: peak {epoch.get('peak_memory_mb')} MiB, cap {cap_mib:.0f} MiB")
    peaks = [e.get("peak_memory_mb", 0) for r in records for e in r.metrics]
    lines = [f"{len(records)} trials at 0.25 GPU, 4 at once, in {seconds:.1f} s; every epoch on "
             f"{state['name']} in {state['native']}, peak reserved {max(peaks, default=0):.0f} MiB "
             f"(cap {cap_mib:.0f} MiB less the CUDA context)"]  # fmt: skip
    state["figures"] = state.get("figures", {}) | {"a": lines[0]}
    return (len(records) == 8 and not problems), lines + problems[:8]


def check_b(state: dict) -> tuple[bool, list[str]]:
    """Trials per hour at 1, 2, 4 trials per GPU, same 8 fixed configurations, order 1 2 4 4 2 1."""
    configs = [SCRATCH | {"base_width": w, "conv_blocks": b} for w, b in [(32, 3), (64, 2), (16, 3), (32, 2)]]
    rates: dict[int, list[float]] = {1: [], 2: [], 4: []}
    order = [1, 2, 4, 4, 2, 1]
    begun, budget = time.monotonic(), state["budget"]
    for index, per_gpu in enumerate(order):
        spent = time.monotonic() - begun
        if index >= 3 and spent + 1.5 * spent / index > budget - 10:
            break  # the second round would not fit the budget: the figures say how many runs each
        _, seconds = _search(state["work"], f"rate_{per_gpu}_{index}", configs, trials=8, per_gpu=per_gpu)
        rates[per_gpu].append(8 / seconds * 3600)
    base = statistics.median(rates[1])
    lines = []
    for per_gpu, values in rates.items():
        lines.append(f"{per_gpu} per GPU: {statistics.median(values):.0f} trials/h (min {min(values):.0f}, max {max(values):.0f}, "
                     f"{len(values)} run(s) of 8 trials x 2 epochs), {statistics.median(values) / base:.2f}x of 1 per GPU")  # fmt: skip
    state["figures"] = state.get("figures", {}) | {"b": lines}
    return all(rates[k] for k in rates), lines


def check_c(state: dict) -> tuple[bool, list[str]]:
    """Images/s of the trainable's step against a bare loop, native mixed precision and fp32."""
    import torch

    from trainables.classifier import TrialConfig
    from trainables.classifier.model import network
    from trainables.classifier.numerics import Precision
    from trainables.classifier.optim import build_optimizer, loss_fn
    from trainables.classifier.step import Step

    device = torch.device("cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    images = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, device=device, generator=generator)
    labels = torch.randint(0, 10, (4096,), device=device, generator=generator)
    cfg = TrialConfig.from_mapping(SCRATCH | {"base_width": 64, "batch_size": 256})
    lines, ok = [], True
    for precision_name in (state["native"], "fp32"):
        runs = {"trainable": [], "bare": []}
        for kind in ["trainable", "bare", "bare", "trainable", "trainable", "bare"]:
            torch.manual_seed(0)
            net, normalize, _ = network(cfg, 10, device)
            precision = Precision(device, precision_name)
            optimizer = build_optimizer(cfg, net)
            if kind == "trainable":
                run = Step(net, optimizer, loss_fn(cfg, None), normalize, precision, micro_batch=256)
            else:
                run = _bare_step(net, optimizer, precision)
            net.train()
            for start in range(0, 1024, 256):  # warm-up: cuDNN autotuning, allocator
                run(images[start : start + 256], labels[start : start + 256])
            torch.cuda.synchronize()
            begun = time.perf_counter()
            for start in range(0, len(images), 256):
                run(images[start : start + 256], labels[start : start + 256])
            torch.cuda.synchronize()
            runs[kind].append(len(images) / (time.perf_counter() - begun))
        ours, bare = statistics.median(runs["trainable"]), statistics.median(runs["bare"])
        lines.append(f"{precision_name}: trainable step {ours:.0f} images/s (min {min(runs['trainable']):.0f}, max "
                     f"{max(runs['trainable']):.0f}), bare loop {bare:.0f} images/s: {ours / bare:.2f}x "
                     f"(scratch_resnet 3 blocks x 64, batch 256, 32 px, 3 runs each, order A B B A A B)")  # fmt: skip
        ok = ok and ours > 0 and bare > 0
    state["figures"] = state.get("figures", {}) | {"c": lines}
    return ok, lines


def _bare_step(net, optimizer, precision):
    """The plain loop: normalise, forward under autocast, loss, backward, (scaled) step."""
    import torch

    scaler = torch.amp.GradScaler("cuda") if precision.name == "fp16" else None

    def run(x, y):
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(net((x.float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)).float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.item(), 0

    return run


def check_d(state: dict) -> tuple[bool, list[str]]:
    """A real CUDA out-of-memory error, in a child process whose memory cap is set below the need."""
    done = subprocess.run([sys.executable, __file__, "--oom-child"], cwd=REPO, capture_output=True, text=True, timeout=BUDGETS["d"] - 5)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        return False, lines + (done.stderr.strip().splitlines() or ["(no output)"])[-5:]
    state["figures"] = state.get("figures", {}) | {"d": lines}
    return True, lines


def oom_child() -> int:
    """Measure the reserved peak of one epoch at batch 256 and at batch 32, cap this process's
    allocator halfway between, train at batch 256 again: it must halve and complete."""
    import numpy as np
    import torch

    from trainables.classifier import train_classifier
    from trainables.contract import TrialData

    rng = np.random.default_rng(0)
    data = TrialData(
        train_images=rng.integers(0, 256, (1024, 3, 64, 64), dtype=np.uint8),
        train_labels=rng.integers(0, 10, 1024),
        val_images=rng.integers(0, 256, (128, 3, 64, 64), dtype=np.uint8),
        val_labels=rng.integers(0, 10, 128),
        classes=tuple(str(i) for i in range(10)),
    )
    config = SCRATCH | {"base_width": 64, "conv_blocks": 4, "max_epochs": 1}

    def peak(batch: int) -> int:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        train_classifier(config | {"batch_size": batch}, data, [].append)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_reserved()

    full, small = peak(256), peak(32)
    total = torch.cuda.get_device_properties(0).total_memory
    cap = (full + small) // 2
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap / total, 0)
    reports: list[dict] = []
    train_classifier(config | {"batch_size": 256}, data, reports.append)
    micro = reports[-1]["micro_batch"]
    print(f"cap {cap / 2**20:.0f} MiB (batch 256 reserves {full / 2**20:.0f} MiB, batch 32 {small / 2**20:.0f} MiB): "
          f"micro-batch 256 -> {micro}, trial completed its epoch (val_acc {reports[-1]['val_acc']:.3f})")  # fmt: skip
    if not micro < 256:
        print("no out-of-memory error happened under the cap: the check proves nothing")
        return 1
    return 0


def check_e(state: dict) -> tuple[bool, list[str]]:
    """retrain and predict (a)'s run: the retrained model lives on cuda and predicts."""
    import numpy as np
    from PIL import Image

    from analysis.predict import predict
    from analysis.retrain import retrain
    from analysis.store import load_retrained, retrained_models

    run_dir = state.get("run_a")
    if run_dir is None:
        return False, ["needs (a)'s run, which did not finish"]
    table = retrain(run_dir, top_k=1, seeds=1, out=lambda line: None, tta=False)
    model = load_retrained(run_dir, retrained_models(run_dir)[0])
    device = next(model.net.parameters()).device
    image = state["work"] / "probe.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    ranked = predict(run_dir, [image], top=3)
    accuracy = float(table["test_acc_mean"].iloc[0]) if "test_acc_mean" in table else float("nan")
    lines = [f"retrained model on {device}, test accuracy {accuracy:.3f}; predict: {ranked[0][0][0]!r} at {ranked[0][0][1]:.2f}"]
    state["figures"] = state.get("figures", {}) | {"e": lines[0]}
    return device.type == "cuda" and len(ranked[0]) == 3, lines


def write_results(outcomes, name, capability, total_gib, native, seconds, torch_version, ray_version) -> None:
    day = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    rows = [START, "## GPU check (benchmarks/gpu_check.py)", "",
            f"Printed by `python benchmarks/gpu_check.py` on {day}: {name} (compute capability "
            f"{capability[0]}.{capability[1]}, {total_gib:.1f} GiB), native precision {native}, torch "
            f"{torch_version}, ray {ray_version}; {seconds:.0f} s in all. One GPU, nobody else on it.", ""]  # fmt: skip
    titles = {"a": "4 trials per GPU", "b": "trials per hour", "c": "images per second", "d": "real out-of-memory", "e": "retrain and predict"}
    for key, (ok, lines) in outcomes.items():
        rows.append(f"- ({key}) {titles[key]}: **{'PASS' if ok else 'FAIL'}**")
        rows.extend(f"  - {line}" for line in lines)
    rows += ["", END]
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + "\n".join(rows) + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(rows) + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    if "--oom-child" in sys.argv:
        sys.exit(oom_child())
    sys.exit(main())
