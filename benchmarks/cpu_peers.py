"""CPU training speed of cnnjax against Keras 3 (JAX backend) and PyTorch, measured side by side.

    python benchmarks/cpu_peers.py --models=quickstart,simple_cnn_cifar,resnet18_cifar \
        --repeats=3 [--steps=N] [--torch_compile] [--out=FILE.json]
    python benchmarks/cpu_peers.py --smoke          # 1 repeat, a few steps, 1-epoch run

Peers are optional (`pip install -e '.[bench]'`); one that is not installed is skipped with one
line. Every measurement runs in its own fresh subprocess (start-up and compilation are honest,
and no two frameworks' thread pools share the cores), and the repeats are interleaved, `for r in
repeats: for model in models: for fw in frameworks: run`, so a shared machine's noise falls on
all of them alike. The table reports median [min-max] per framework and the ratios.

What is measured, per model (its cnnjax experiment gives optimizer, loss and batch size):

- **Training images/s**, steady state: `warmup` untimed steps, then `steps` timed ones between
  two device synchronizations, on the same arrays for all frameworks: `benchmark.synthetic_like`
  of the experiment's image shape (seed 0), 4 batches, exactly what cnnjax's
  `cnnjax.modes.benchmark.time_train_step` trains on (checked by a checksum).
  - cnnjax: `time_train_step`, the training loop's own fused step (batch cut, normalization,
    forward, backward, update), `block_until_ready` around the timed steps.
  - Keras: `model.fit` on an in-memory numpy array (shuffle, jit default), `verbose=0`; a
    callback blocks on the model's JAX state at the start of the first and after the last timed
    step (`on_train_batch_begin`, so Keras keeps its asynchronous dispatch).
  - PyTorch: eager (and `torch.compile` with `--torch_compile`), `channels_last`,
    `torch.set_num_threads(os.cpu_count())` (`--torch_threads=N` to change), a plain loop
    over pre-built batch tensors. On a busy machine all-core OpenMP threads can be far slower
    than one (LeNet-5 on the shared 2-core box: 105 ms/step with 2 threads, 6 ms with 1):
    measure on a quiet machine.
  - Augmentation is off in all of them (cnnjax's experiment crop/flip set to 0): the rows time
    the model's training step, not three different augmentation implementations. The peers also
    get their inputs normalized once up front and a constant learning rate; cnnjax normalizes
    inside its step and runs its schedule. Both only favour the peers.
- **Whole run** (quickstart only): the complete recipe, 30 epochs of LeNet-5 on the embedded
  digits with 2 px shift augmentation and an evaluation after every epoch, timed from process
  start to exit (start-up and compilation included), and the **time to accuracy**: from process
  start to the first evaluation at or above `--threshold` test accuracy.
  - cnnjax: `python launch.py --experiment=quickstart --workdir=TMP --compilation_cache=off`
    (cold: no persistent compilation cache, as Keras has none), which also writes checkpoints,
    TensorBoard events, the report and its plots.
  - Keras: the script a Keras user writes: `RandomTranslation(2/32, nearest, constant 0)` and
    `Normalization` layers in front of LeNet-5, `model.fit(x, y, batch_size=64, epochs=30,
    validation_data=(x_test, y_test), verbose=0)` with Adam and a warm-up + cosine
    `CosineDecay` schedule; the last partial batch is kept, as `fit` does.
  - PyTorch: a plain loop (last partial batch dropped, as cnnjax), per-image pad-and-crop on
    the batch tensor, the same warm-up + cosine schedule, evaluation after every epoch.

For the CIFAR models only images/s is measured (on random CIFAR-shaped data). ResNet-18 runs at
batch 128 (its experiment says 512, the GPU batch). Each peer's trainable parameter count is
checked against cnnjax's before anything is timed: LeNet-5 62,558 (1 channel),
cifar_2conv_pool_dense128 564,426, ResNet-18 with the CIFAR stem 11,173,962.
"""

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))

# Benchmark name -> its cnnjax experiment, the overrides for the images/s rows, default steps.
MODELS = {
    "quickstart": {"experiment": "quickstart", "overrides": [], "steps": 200, "warmup": 10},
    "simple_cnn_cifar": {
        "experiment": "simple_cnn_cifar",
        "overrides": [("data.name", "synthetic")],
        "steps": 40,
        "warmup": 3,
    },
    "resnet18_cifar": {
        "experiment": "resnet18_cifar",
        "overrides": [("data.name", "synthetic"), ("batch_size", "128")],
        "steps": 15,
        "warmup": 3,
    },
}
NO_AUGMENT = [("augment.crop_padding", "0"), ("augment.flip", "false")]
# Published trainable parameter counts (10 classes), checked as well as cnnjax's own.
KNOWN_PARAMS = {
    "lenet5": 62_558,
    "cifar_2conv_pool_dense128": 564_426,
    "resnet18_cifar": 11_173_962,
}
PEERS = ("keras", "torch", "torch.compile")
TARGETS = {"keras": 1.3, "torch": 1.0}  # cnnjax / peer images/s; torch: its best row.


# ------------------------------------------------------------------------------------------
# The parent: data, jobs, interleaved subprocesses, the table.


def _config(experiment: str, overrides):
    sys.path.insert(0, ROOT)
    import experiments
    from cnnjax.overrides import apply_overrides

    return apply_overrides(experiments.EXPERIMENTS[experiment].get_config(), list(overrides))


def _arch(config) -> str:
    """The peer architecture of a cnnjax model config (the builders below know these)."""
    name = config.model.name
    if name == "resnet18" and config.model.get("stem", "imagenet") == "cifar":
        return "resnet18_cifar"
    if name in ("lenet5", "cifar_2conv_pool_dense128"):
        return name
    raise SystemExit(f"no peer model written for cnnjax model {name!r}")


def _optim(config) -> dict:
    oc = config.optim
    keys = ("name", "lr", "momentum", "nesterov", "weight_decay", "b1", "b2", "eps")
    return {k: oc[k] for k in keys}


def _checksum(images, labels) -> str:
    return hashlib.sha1(images.tobytes() + labels.astype("int32").tobytes()).hexdigest()


def prepare_ips(name: str, tmp: str) -> dict:
    """The job of one model's images/s rows, and its data file (shared by all frameworks)."""
    import numpy as np

    from cnnjax import data as data_lib
    from cnnjax.models import get_model
    from cnnjax.modes import benchmark
    from cnnjax.summary import summarize
    from cnnjax.train import feeds

    spec = MODELS[name]
    overrides = spec["overrides"] + NO_AUGMENT
    config = _config(spec["experiment"], overrides)
    dataset = data_lib.load(config.data)
    bs = int(config.batch_size)
    k = feeds.steps_per_execution(config)
    n = k * -(-4 // k) * bs  # What time_train_step trains on.
    data = benchmark.synthetic_like(dataset, n)
    path = os.path.join(tmp, f"{name}-ips.npz")
    np.savez(
        path,
        images=data.train_images,
        labels=data.train_labels,
        mean=data.mean,
        std=data.std,
    )
    kwargs = {key: v for key, v in config.model.items() if key != "name"}
    model = get_model(config.model.name, num_classes=dataset.num_classes, **kwargs)
    params = summarize(model, dataset.image_shape).trainable_params
    arch = _arch(config)
    if dataset.num_classes == 10 and params != KNOWN_PARAMS[arch]:
        raise SystemExit(
            f"cnnjax {arch} has {params:,} parameters, expected {KNOWN_PARAMS[arch]:,}"
        )
    return {
        "kind": "ips",
        "model": name,
        "arch": arch,
        "experiment": spec["experiment"],
        "overrides": overrides,
        "data": path,
        "checksum": _checksum(data.train_images, data.train_labels),
        "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes,
        "batch_size": bs,
        "optim": _optim(config),
        "label_smoothing": float(config.label_smoothing),
        "expected_params": int(params),
    }


def prepare_run(tmp: str, epochs: float | None) -> dict:
    """The quickstart whole-run job: the real digits (as cnnjax loads them) and the recipe."""
    import numpy as np

    from cnnjax import data as data_lib

    config = _config("quickstart", [])
    data = data_lib.load(config.data)
    path = os.path.join(tmp, "quickstart-run.npz")
    np.savez(
        path,
        train_images=data.train_images,
        train_labels=data.train_labels,
        test_images=data.test_images,
        test_labels=data.test_labels,
        mean=data.mean,
        std=data.std,
    )
    sc = config.schedule
    if sc.name != "cosine":
        raise SystemExit(f"the peers' quickstart schedule is cosine; the experiment has {sc.name}")
    return {
        "kind": "run",
        "model": "quickstart",
        "arch": _arch(config),
        "data": path,
        "image_shape": list(data.image_shape),
        "num_classes": data.num_classes,
        "batch_size": int(config.batch_size),
        "epochs": float(epochs if epochs is not None else config.num_epochs),
        "epochs_override": epochs is not None,
        "optim": _optim(config),
        "label_smoothing": float(config.label_smoothing),
        "schedule": {
            "warmup_epochs": float(sc.warmup_epochs),
            "warmup_steps": int(sc.warmup_steps),
            "end_lr_factor": float(sc.end_lr_factor),
        },
        "crop_padding": int(config.augment.crop_padding),
        "flip": bool(config.augment.flip),
        "expected_params": KNOWN_PARAMS[_arch(config)],
    }


def _env() -> dict:
    env = dict(os.environ)
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _tail(path: str, n: int = 1) -> str:
    with open(path, errors="replace") as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def run_job(job: dict, fw: str, tmp: str, tag: str, timeout: float, threads: int) -> dict:
    """One measurement in a fresh subprocess; returns its result dict (ok False on failure).
    threads: PyTorch's intra-op threads."""
    result_path = os.path.join(tmp, f"{tag}.result.json")
    log_path = os.path.join(tmp, f"{tag}.log")
    job = dict(job, framework=fw, result=result_path, threads=threads)
    workdir = None
    if job["kind"] == "run" and fw == "cnnjax":
        workdir = os.path.join(tmp, f"{tag}.workdir")
        cmd = [
            sys.executable,
            os.path.join(ROOT, "launch.py"),
            "--experiment=quickstart",
            f"--workdir={workdir}",
            "--compilation_cache=off",
        ]
        if job["epochs_override"]:
            cmd.append(f"--config.num_epochs={job['epochs']}")
    else:
        job_path = os.path.join(tmp, f"{tag}.job.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        cmd = [sys.executable, os.path.abspath(__file__), f"--worker={job_path}"]
    base = {"model": job["model"], "framework": fw, "kind": job["kind"], "cmd": " ".join(cmd)}
    base["loadavg_before"] = os.getloadavg()[0]
    t_launch = time.time()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    base.update(rc=rc, process_s=wall, loadavg_after=os.getloadavg()[0])
    if rc != 0:
        return dict(base, ok=False, error=_tail(log_path, 3))
    if workdir is not None:
        res = _cnnjax_run_result(workdir, job)
    else:
        with open(result_path) as f:
            res = json.load(f)
    res = dict(base, ok=True, **res)
    if job["kind"] == "run":
        res["whole_run_s"] = wall
        res["evals"] = [dict(e, since_launch_s=e["wall_time"] - t_launch) for e in res["evals"]]
    return res


def _cnnjax_run_result(workdir: str, job: dict) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f]
    evals = [
        {"epoch": e["epoch"], "wall_time": e["wall_time"], "accuracy": e["accuracy"]}
        for e in events
        if e.get("kind") == "eval"
    ]
    return {"params": job["expected_params"], "evals": evals}


def _with_tta(res: dict, threshold: float) -> dict:
    hit = next((e for e in res["evals"] if e["accuracy"] >= threshold), None)
    res["time_to_accuracy_s"] = hit["since_launch_s"] if hit else None
    res["final_accuracy"] = res["evals"][-1]["accuracy"] if res["evals"] else None
    return res


def available_peers(wanted) -> list[str]:
    out = []
    for fw in wanted:
        module = "keras" if fw == "keras" else "torch"
        if importlib.util.find_spec(module) is None:
            print(f"skipping {fw}: {module} is not installed (pip install -e '.[bench]')")
            continue
        if module == "keras":
            major = importlib.metadata.version("keras").split(".")[0]
            if int(major) < 3:
                print(f"skipping keras: Keras {major}.x has no JAX backend (needs keras>=3)")
                continue
        if fw == "torch.compile" and not any(
            os.access(os.path.join(d, c), os.X_OK)
            for d in os.environ.get("PATH", "").split(os.pathsep)
            for c in ("g++", "c++", "clang++")
        ):
            print("skipping torch.compile: no C++ compiler on PATH (inductor needs one on CPU)")
            continue
        out.append(fw)
    return out


def _versions() -> dict:
    out = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "keras", "torch", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _stats(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize_results(results: list[dict], frameworks, threshold: float) -> dict:
    summary = {"ips": {}, "run": {}}
    models = list(dict.fromkeys(r["model"] for r in results if r["kind"] == "ips"))
    for m in models:
        rows = {}
        for fw in frameworks:
            ok = [
                r
                for r in results
                if (r["model"], r["framework"], r["kind"], r["ok"]) == (m, fw, "ips", True)
            ]
            s = _stats([r["images_per_sec"] for r in ok])
            if s:
                s["ms_per_step"] = statistics.median(r["ms_per_step"] for r in ok)
                s["params"] = ok[0]["params"]
                s["n"] = len(ok)
                rows[fw] = s
        summary["ips"][m] = rows
    runs = [r for r in results if r["kind"] == "run"]
    for fw in frameworks:
        ok = [r for r in runs if r["framework"] == fw and r["ok"]]
        if ok:
            summary["run"][fw] = {
                "whole_run_s": _stats([r["whole_run_s"] for r in ok]),
                "time_to_accuracy_s": _stats([r["time_to_accuracy_s"] for r in ok]),
                "reached": sum(r["time_to_accuracy_s"] is not None for r in ok),
                "final_accuracy": _stats([r["final_accuracy"] for r in ok]),
                "n": len(ok),
            }
    summary["threshold"] = threshold
    return summary


def _fmt(s: dict | None, spec: str = ",.0f", unit: str = "") -> str:
    if not s:
        return "n/a"
    f = lambda v: format(v, spec) + unit
    return f"{f(s['median'])} [{f(s['min'])}-{f(s['max'])}]"


def print_table(summary: dict) -> None:
    print("\n## Training images/s (steady state; median [min-max] over repeats)\n")
    print("| model | framework | params | images/s | ms/step | cnnjax / this |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m, rows in summary["ips"].items():
        base = rows.get("cnnjax")
        for fw, s in rows.items():
            ratio = f"{base['median'] / s['median']:.2f}x" if base and fw != "cnnjax" else "-"
            print(
                f"| {m} | {fw} | {s['params']:,} | {_fmt(s)} | {s['ms_per_step']:.2f} | {ratio} |"
            )
    checks = []
    for m, rows in summary["ips"].items():
        base = rows.get("cnnjax")
        if not base:
            continue
        for peer, target in TARGETS.items():
            peer_rows = [s for fw, s in rows.items() if fw.split(".")[0] == peer]
            if peer_rows:
                best = max(s["median"] for s in peer_rows)
                ratio = base["median"] / best
                met = "met" if ratio >= target else "NOT met"
                checks.append(f"  {m}: cnnjax / {peer} {ratio:.2f}x (target >= {target}x): {met}")
    if summary["run"]:
        t = summary["threshold"]
        print(
            f"\n## quickstart whole run (process start to exit; time to >= {100 * t:g}% test "
            "accuracy from process start)\n"
        )
        print(
            "| framework | whole run s | this / cnnjax | time to accuracy s | reached | "
            "final test accuracy |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        base = summary["run"].get("cnnjax")
        for fw, s in summary["run"].items():
            ratio = (
                f"{s['whole_run_s']['median'] / base['whole_run_s']['median']:.2f}x"
                if base and fw != "cnnjax"
                else "-"
            )
            acc = s["final_accuracy"]
            acc_text = (
                f"{100 * acc['median']:.2f}% [{100 * acc['min']:.2f}-{100 * acc['max']:.2f}]"
                if acc
                else "n/a"
            )
            print(
                f"| {fw} | {_fmt(s['whole_run_s'], '.1f')} | {ratio} | "
                f"{_fmt(s['time_to_accuracy_s'], '.1f')} | {s['reached']}/{s['n']} | {acc_text} |"
            )
        keras = summary["run"].get("keras")
        if base and keras:
            b, k = base["whole_run_s"]["median"], keras["whole_run_s"]["median"]
            met = "met" if b <= k else "NOT met"
            checks.append(f"  quickstart whole run: cnnjax {b:.1f} s vs Keras {k:.1f} s: {met}")
    if checks:
        print("\nTargets (on medians):")
        print("\n".join(checks))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="quickstart,simple_cnn_cifar,resnet18_cifar")
    p.add_argument("--frameworks", default="cnnjax,keras,torch", help="and torch.compile")
    p.add_argument("--torch_compile", action="store_true", help="add a torch.compile row")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: per model)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default: per model)")
    p.add_argument("--epochs", type=float, default=None, help="whole run (default: the recipe's)")
    p.add_argument("--threshold", type=float, default=0.97, help="time-to-accuracy threshold")
    p.add_argument("--no_whole_run", action="store_true", help="quickstart: images/s only")
    p.add_argument(
        "--torch_threads", type=int, default=0, help="PyTorch threads (default: all CPUs)"
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    p.add_argument("--smoke", action="store_true", help="1 repeat, 2 steps, a 1-epoch run")
    p.add_argument("--out", default="", help="write every raw measurement here (JSON)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    os.environ["JAX_PLATFORMS"] = "cpu"  # This process prepares the data with cnnjax on CPU.
    if args.smoke:
        args.repeats, args.steps, args.warmup = 1, 2, 1
        args.epochs = 1.0 if args.epochs is None else args.epochs
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
        return 2
    wanted = [f for f in args.frameworks.split(",") if f]
    if args.torch_compile and "torch.compile" not in wanted:
        wanted.append("torch.compile")
    bad = [f for f in wanted if f != "cnnjax" and f not in PEERS]
    if bad:
        print(f"unknown framework(s) {', '.join(bad)}; choose from cnnjax, {', '.join(PEERS)}")
        return 2
    frameworks = (["cnnjax"] if "cnnjax" in wanted else []) + available_peers(
        [f for f in wanted if f != "cnnjax"]
    )

    threads = args.torch_threads or os.cpu_count()
    results, failed = [], False
    with tempfile.TemporaryDirectory(prefix="cnnjax-cpu-peers-") as tmp:
        jobs = {}
        for m in models:
            job = prepare_ips(m, tmp)
            job["steps"] = args.steps or MODELS[m]["steps"]
            # At least one untimed step: it compiles, and Keras' timer needs a state to wait on.
            job["warmup"] = max(1, args.warmup if args.warmup is not None else MODELS[m]["warmup"])
            jobs[m] = job
            print(
                f"{m}: {job['arch']}, {job['expected_params']:,} trainable parameters, "
                f"batch {job['batch_size']}, {job['steps']} timed steps after {job['warmup']}"
            )
        run_job_spec = None
        if "quickstart" in models and not args.no_whole_run:
            run_job_spec = prepare_run(tmp, args.epochs)
        print(
            f"frameworks: {', '.join(frameworks)}; {args.repeats} repeat(s), interleaved; "
            f"{os.cpu_count()} CPUs, {threads} PyTorch threads",
            flush=True,
        )
        for r in range(args.repeats):
            for m in models:
                for fw in frameworks:
                    res = run_job(jobs[m], fw, tmp, f"r{r}-{m}-ips-{fw}", args.timeout, threads)
                    res["repeat"] = r
                    failed |= _report(res, jobs[m]["expected_params"])
                    results.append(res)
            if run_job_spec is not None:
                for fw in [f for f in frameworks if f != "torch.compile"]:
                    res = run_job(
                        run_job_spec, fw, tmp, f"r{r}-quickstart-run-{fw}", args.timeout, threads
                    )
                    res["repeat"] = r
                    if res["ok"]:
                        _with_tta(res, args.threshold)
                    failed |= _report(res, run_job_spec["expected_params"])
                    results.append(res)
    summary = summarize_results(results, frameworks, args.threshold)
    print_table(summary)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "machine": {
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                        "processor": platform.processor(),
                        "python": platform.python_version(),
                        "versions": _versions(),
                    },
                    "args": vars(args),
                    "summary": summary,
                    "measurements": results,
                },
                f,
                indent=1,
            )
        print(f"\nraw measurements: {args.out}")
    return 1 if failed else 0


def _report(res: dict, expected_params: int) -> bool:
    """Prints one line for a measurement; True if it failed or its model is not the same."""
    head = f"[r{res.get('repeat', 0)}] {res['model']:<16} {res['framework']:<13} {res['kind']:<4}"
    if not res["ok"]:
        print(f"{head} FAILED (exit {res['rc']}): {res['error']}", flush=True)
        return True
    bad = res["params"] != expected_params
    if bad:
        res["ok"] = False
        print(f"{head} PARAMETER MISMATCH: {res['params']:,} != cnnjax's {expected_params:,}")
        return True
    if res["kind"] == "ips":
        print(
            f"{head} {res['images_per_sec']:>10,.0f} images/s  {res['ms_per_step']:8.2f} ms/step"
            f"  (first steps {res['warmup_s']:.1f} s, load {res['loadavg_before']:.1f})",
            flush=True,
        )
    else:
        tta = res["time_to_accuracy_s"]
        tta_text = f"{tta:.1f} s" if tta is not None else "not reached"
        print(
            f"{head} whole run {res['whole_run_s']:.1f} s, final accuracy "
            f"{100 * res['final_accuracy']:.2f}%, to threshold "
            f"{tta_text}",
            flush=True,
        )
    return False


# ------------------------------------------------------------------------------------------
# The workers: one measurement each, in a fresh process.


def worker(job_path: str) -> int:
    with open(job_path) as f:
        job = json.load(f)
    fw, kind = job["framework"], job["kind"]
    if fw == "cnnjax":
        from cnnjax import runtime

        # What launch.py does (--xla_cpu_tuning), before JAX starts.
        config = _config(job["experiment"], job["overrides"])
        runtime.tune_xla_cpu(config.get("xla_cpu_ynn_fusions", ""))
        res = cnnjax_ips(job)
    elif fw == "keras":
        res = keras_ips(job) if kind == "ips" else keras_run(job)
    else:
        res = torch_ips(job, compiled=fw == "torch.compile") if kind == "ips" else torch_run(job)
    with open(job["result"], "w") as f:
        json.dump(res, f)
    return 0


def _check_params(fw: str, params: int, job: dict) -> None:
    if params != job["expected_params"]:
        raise SystemExit(
            f"{fw} {job['arch']} has {params:,} trainable parameters, cnnjax's has "
            f"{job['expected_params']:,}: not the same model"
        )


def _ips_data(job: dict):
    """(normalized float32 NHWC images, int32 labels) of the shared images/s arrays."""
    import numpy as np

    d = np.load(job["data"])
    x = ((d["images"].astype(np.float32) / 255.0 - d["mean"]) / d["std"]).astype(np.float32)
    return x, d["labels"].astype(np.int32)


def _ips_result(params, bs, steps, elapsed, warmup_s, **extra) -> dict:
    return {
        "params": int(params),
        "batch_size": bs,
        "steps": steps,
        "images_per_sec": steps * bs / elapsed,
        "ms_per_step": 1e3 * elapsed / steps,
        "warmup_s": warmup_s,
        **extra,
    }


def cnnjax_ips(job: dict) -> dict:
    import numpy as np

    from cnnjax import data as data_lib
    from cnnjax.modes import benchmark

    config = _config(job["experiment"], job["overrides"])
    dataset = data_lib.load(config.data)
    bs = int(config.batch_size)
    n = len(np.load(job["data"])["labels"])
    same = benchmark.synthetic_like(dataset, n)
    if _checksum(same.train_images, same.train_labels) != job["checksum"]:
        raise SystemExit("cnnjax's benchmark data differs from the peers' arrays")
    t0 = time.perf_counter()
    t = benchmark.time_train_step(
        config, steps_per_run=job["steps"], warmup=job["warmup"], dataset=dataset
    )
    total = time.perf_counter() - t0
    elapsed = t.ms_per_step * t.steps / 1e3
    return _ips_result(
        job["expected_params"],
        bs,
        t.steps,
        elapsed,
        total - elapsed,
        compile_s=t.compile_s,
    )


# --- Keras 3 (JAX backend) -----------------------------------------------------------------


def keras_model(keras, arch: str, shape, num_classes: int, front=()):
    """The Keras twin of cnnjax's `arch`; `front`: layers before it (augmentation, ...)."""
    L = keras.layers
    inputs = keras.Input(shape=tuple(shape))
    x = inputs
    for layer in front:
        x = layer(x)
    if arch == "lenet5":  # Flax defaults: lecun-normal kernels, zero biases.
        init = "lecun_normal"
        for f in (8, 16):
            x = L.Conv2D(f, 5, activation="relu", kernel_initializer=init)(x)
            x = L.MaxPooling2D(2)(x)
        x = L.Flatten()(x)
        for d in (120, 84):
            x = L.Dense(d, activation="relu", kernel_initializer=init)(x)
        x = L.Dense(num_classes, kernel_initializer=init)(x)
    elif arch == "cifar_2conv_pool_dense128":  # Keras defaults, as cnnjax's seed models.
        for _ in range(2):
            x = L.Conv2D(64, 3, padding="same", activation="relu")(x)
            x = L.MaxPooling2D(2)(x)
        x = L.Flatten()(x)
        x = L.Dense(128, activation="relu")(x)
        x = L.Dense(num_classes)(x)
    elif arch == "resnet18_cifar":
        bn = lambda: L.BatchNormalization(momentum=0.9, epsilon=1e-5)
        conv = lambda f, k, s=1: L.Conv2D(
            f, k, strides=s, padding="same", use_bias=False, kernel_initializer="he_normal"
        )
        x = L.ReLU()(bn()(conv(64, 3)(x)))
        cin = 64
        for i, f in enumerate((64, 128, 256, 512)):
            for j in range(2):
                s = 2 if i > 0 and j == 0 else 1
                y = L.ReLU()(bn()(conv(f, 3, s)(x)))
                y = bn()(conv(f, 3)(y))
                short = bn()(conv(f, 1, s)(x)) if s != 1 or cin != f else x
                x = L.ReLU()(L.Add()([short, y]))
                cin = f
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(num_classes)(x)
    else:
        raise SystemExit(f"no Keras model for {arch}")
    return keras.Model(inputs, x)


def _keras_compile(keras, model, job, learning_rate):
    o = job["optim"]
    if o["name"] == "adam":
        opt = keras.optimizers.Adam(
            learning_rate,
            beta_1=o["b1"],
            beta_2=o["b2"],
            epsilon=o["eps"],
            weight_decay=o["weight_decay"] or None,
        )
    elif o["name"] == "sgd":
        opt = keras.optimizers.SGD(
            learning_rate,
            momentum=o["momentum"],
            nesterov=o["nesterov"],
            weight_decay=o["weight_decay"] or None,
        )
    else:
        raise SystemExit(f"no Keras optimizer mapped for {o['name']}")
    ls = job["label_smoothing"]
    loss = (
        keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=ls)
        if ls > 0
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])


def _keras_labels(job, y):
    import numpy as np

    if job["label_smoothing"] > 0:  # CategoricalCrossentropy: one-hot targets.
        return np.eye(job["num_classes"], dtype=np.float32)[y]
    return y


def _keras_params(model) -> int:
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def keras_ips(job: dict) -> dict:
    import jax
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x, y = _ips_data(job)
    model = keras_model(keras, job["arch"], job["image_shape"], job["num_classes"])
    params = _keras_params(model)
    _check_params("Keras", params, job)
    _keras_compile(keras, model, job, job["optim"]["lr"])
    bs, warmup, steps = job["batch_size"], job["warmup"], job["steps"]
    total = warmup + steps + 1  # One more batch: the timer stops as it begins.
    idx = np.arange(total * bs) % len(y)
    marks = {}

    class Timer(keras.callbacks.Callback):
        # on_train_batch_begin only: a callback with on_train_batch_end would make Keras
        # turn every step's logs into Python floats (a sync per step).
        def on_train_batch_begin(self, batch, logs=None):
            if batch in (1, warmup, warmup + steps):
                # The state after the previous step, held by fit between steps. Its containers
                # are Keras' TrackedDict/TrackedList, which JAX does not see as pytrees: the
                # arrays are listed out, or block_until_ready would return at once.
                state = getattr(self.model, "_jax_state", None) or {}
                arrays = [a for group in state.values() for a in group]
                jax.block_until_ready(arrays)
                marks[batch] = time.perf_counter()
                synced = bool(arrays) and all(isinstance(a, jax.Array) for a in arrays)
                marks["synced"] = marks.get("synced", True) and synced

    t0 = time.perf_counter()
    model.fit(
        x[idx],
        _keras_labels(job, y[idx]),
        batch_size=bs,
        epochs=1,
        verbose=0,
        callbacks=[Timer()],
    )
    if not marks["synced"]:
        raise SystemExit("found no JAX state to wait on in Keras' fit: cannot time its steps")
    elapsed = marks[warmup + steps] - marks[warmup]
    return _ips_result(
        params,
        bs,
        steps,
        elapsed,
        marks[warmup] - t0,
        first_step_s=marks.get(1, float("nan")) - t0,
        synced=marks["synced"],
    )


def _warmup_total(job: dict, steps_per_epoch: int) -> tuple[int, int]:
    """(warm-up steps, total steps) of the recipe, as cnnjax's optim.create_schedule."""
    total = max(1, int(math.ceil(job["epochs"] * steps_per_epoch)))
    sc = job["schedule"]
    warm = sc["warmup_steps"] + int(round(sc["warmup_epochs"] * steps_per_epoch))
    return (min(warm, total - 1) if total > 1 else 0), total


def _load_run_data(job: dict):
    import numpy as np

    d = np.load(job["data"])
    f = lambda a: a.astype(np.float32) / 255.0  # Pixels in [0, 1]; normalized in the model.
    return (
        f(d["train_images"]),
        d["train_labels"].astype(np.int32),
        f(d["test_images"]),
        d["test_labels"].astype(np.int32),
        d["mean"].astype(np.float32),
        d["std"].astype(np.float32),
    )


def keras_run(job: dict) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    x, y, xt, yt, mean, std = _load_run_data(job)
    h, w = job["image_shape"][:2]
    p = job["crop_padding"]
    front = []
    if p:
        front.append(
            keras.layers.RandomTranslation(
                p / h, p / w, fill_mode="constant", interpolation="nearest", fill_value=0.0
            )
        )
    if job["flip"]:
        front.append(keras.layers.RandomFlip("horizontal"))
    front.append(keras.layers.Normalization(mean=mean, variance=std**2))
    model = keras_model(keras, job["arch"], job["image_shape"], job["num_classes"], front)
    params = _keras_params(model)
    _check_params("Keras", params, job)
    bs = job["batch_size"]
    warm, total = _warmup_total(job, math.ceil(len(y) / bs))  # fit keeps the partial batch.
    lr = job["optim"]["lr"]
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warm else lr,
        max(1, total - warm),
        alpha=job["schedule"]["end_lr_factor"],
        warmup_target=lr if warm else None,
        warmup_steps=warm,
    )
    _keras_compile(keras, model, job, schedule)
    evals = []

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            acc = float(logs["val_accuracy"])
            evals.append({"epoch": epoch + 1, "wall_time": time.time(), "accuracy": acc})
            print(f"epoch {epoch + 1}: test accuracy {100 * acc:.2f}%", flush=True)

    model.fit(
        x,
        _keras_labels(job, y),
        batch_size=bs,
        epochs=int(math.ceil(job["epochs"])),
        validation_data=(xt, _keras_labels(job, yt)),
        verbose=0,
        callbacks=[EpochLog()],
    )
    return {"params": params, "evals": evals}


# --- PyTorch (CPU) -------------------------------------------------------------------------


def _lecun_normal_(torch, module):
    """Flax's lecun_normal (truncated at 2 std) for weights, zero biases: cnnjax's LeNet-5."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            torch.nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            torch.nn.init.zeros_(m.bias)


def torch_model(torch, arch: str, shape, num_classes: int):
    nn = torch.nn
    h, w, c = shape
    if arch == "lenet5":
        side = lambda n: ((n - 4) // 2 - 4) // 2
        model = nn.Sequential(
            nn.Conv2d(c, 8, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * side(h) * side(w), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )
        _lecun_normal_(torch, model)
        return model
    if arch == "cifar_2conv_pool_dense128":
        model = nn.Sequential(
            nn.Conv2d(c, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
        for m in model.modules():  # Keras' (and cnnjax's seed models') initializers.
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        return model
    if arch == "resnet18_cifar":
        sys.path.insert(0, HERE)
        from torch_reference import build_resnet18_cifar

        return build_resnet18_cifar(torch, num_classes)
    raise SystemExit(f"no PyTorch model for {arch}")


def _torch_setup(job: dict):
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model = torch_model(torch, job["arch"], job["image_shape"], job["num_classes"])
    model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _check_params("PyTorch", params, job)
    o = job["optim"]
    if o["name"] == "adam":
        opt = torch.optim.Adam(
            model.parameters(),
            lr=o["lr"],
            betas=(o["b1"], o["b2"]),
            eps=o["eps"],
            weight_decay=o["weight_decay"],
        )
    elif o["name"] == "sgd":
        opt = torch.optim.SGD(
            model.parameters(),
            lr=o["lr"],
            momentum=o["momentum"],
            nesterov=o["nesterov"],
            weight_decay=o["weight_decay"],
        )
    else:
        raise SystemExit(f"no PyTorch optimizer mapped for {o['name']}")
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=job["label_smoothing"])

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return torch, model, opt, step, params


def _nchw(torch, x):
    """float32 NHWC numpy -> NCHW torch tensor in channels_last memory."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    return t.contiguous(memory_format=torch.channels_last)


def torch_ips(job: dict, compiled: bool) -> dict:
    x, y = _ips_data(job)
    torch, model, _, step, params = _torch_setup(job)
    model.train()
    if compiled:
        step = torch.compile(step)
    bs = job["batch_size"]
    batches = [
        (_nchw(torch, x[i : i + bs]), torch.from_numpy(y[i : i + bs]).long())
        for i in range(0, len(y) - bs + 1, bs)
    ]
    t0 = time.perf_counter()
    for i in range(job["warmup"]):
        step(*batches[i % len(batches)])
    t1 = time.perf_counter()
    for i in range(job["steps"]):
        step(*batches[i % len(batches)])
    elapsed = time.perf_counter() - t1  # CPU: every op has finished when it returns.
    return _ips_result(
        params, bs, job["steps"], elapsed, t1 - t0, torch_threads=torch.get_num_threads()
    )


def torch_run(job: dict) -> dict:
    x, y, xt, yt, mean, std = _load_run_data(job)
    torch, model, opt, step, params = _torch_setup(job)
    bs, p = job["batch_size"], job["crop_padding"]
    steps_per_epoch = len(y) // bs  # Whole batches, as cnnjax.
    warm, total = _warmup_total(job, steps_per_epoch)
    end = job["schedule"]["end_lr_factor"]

    def factor(s):  # optax.warmup_cosine_decay_schedule / lr.
        if s < warm:
            return s / warm
        t = min(s - warm, total - warm) / max(1, total - warm)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    xs, ys = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()
    mean_t = torch.from_numpy(mean).view(1, -1, 1, 1)
    std_t = torch.from_numpy(std).view(1, -1, 1, 1)
    norm = lambda b: ((b - mean_t) / std_t).contiguous(memory_format=torch.channels_last)
    xt_t = norm(torch.from_numpy(xt).permute(0, 3, 1, 2))
    yt_t = torch.from_numpy(yt).long()
    _, _, h, w = xs.shape
    rows, cols = torch.arange(h), torch.arange(w)

    def augment(b):  # Pad with black and crop back at a random offset per image.
        if p:
            n = b.shape[0]
            padded = torch.nn.functional.pad(b, (p, p, p, p))
            off = torch.randint(0, 2 * p + 1, (n, 2))
            r = (off[:, 0:1] + rows)[:, :, None]
            c = (off[:, 1:2] + cols)[:, None, :]
            b = padded[torch.arange(n)[:, None, None], :, r, c].permute(0, 3, 1, 2)
        if job["flip"]:
            flip = torch.rand(b.shape[0]) < 0.5
            b = torch.where(flip[:, None, None, None], b.flip(3), b)
        return b

    evals, s, epoch = [], 0, 0
    while s < total:
        model.train()
        perm = torch.randperm(len(ys))
        for i in range(steps_per_epoch):
            if s >= total:
                break
            idx = perm[i * bs : (i + 1) * bs]
            step(norm(augment(xs[idx])), ys[idx])
            sched.step()
            s += 1
        epoch += 1
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(xt_t[i : i + bs]).argmax(1) == yt_t[i : i + bs]).sum())
                for i in range(0, len(yt_t), bs)
            )
        acc = correct / len(yt_t)
        evals.append({"epoch": epoch, "wall_time": time.time(), "accuracy": acc})
        print(f"epoch {epoch}: test accuracy {100 * acc:.2f}%", flush=True)
    return {"params": params, "evals": evals}


if __name__ == "__main__":
    sys.exit(main())
