"""Kill-anywhere harness: the husai CLI run to completion, then SIGKILLed at chosen atomic
writes (husai.faults), rerun, and checked against the uninterrupted run.

CLI launches go through a fork server: one process that imports husai (torch, transformers,
matplotlib) once and forks a child per command, which runs the CLI as `husai ARGS` would and
is killed by the fault (a real SIGKILL: no cleanup, exit status -9). That saves the ~3 s of
imports per launch that would otherwise dominate a chain of kills.

A point is (label, glob, n, phase): `HUSAI_FAULT=kill@<n>:<phase>`,
`HUSAI_FAULT_PATH=<glob>`. Before each link the harness notes what is finished on disk (jobs
with a valid job.json, toy-model cache entries, store shards that match their index); the
link's write log must not touch any of it (not recomputed).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
TESTS = Path(__file__).resolve().parents[1]

_SERVER = r"""
import json, os, signal, sys, time
import io
import husai.cli, husai.experiments.run, husai.report, husai.lm, husai.experiments.lm_data
import matplotlib.pyplot as plt
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401
from husai.cli import app
# warm what each command would load lazily (no thread is started by any of it)
torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled())
fig = plt.figure()
fig.text(0.5, 0.5, "warm")
fig.savefig(io.BytesIO(), format="png")
plt.close(fig)
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if "inputs" in req:  # make the test inputs (transformers is loaded here already)
                sys.path.insert(0, req["harness"])
                import _kill
                _kill.make_inputs(__import__("pathlib").Path(req["inputs"]))
                os._exit(0)
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            fd = os.open(req["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = ["husai", *req["args"]]
            app(req["args"], prog_name="husai")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + req["kill_after"] if req.get("kill_after") else None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = None
        time.sleep(0.005)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"rc": rc, "cpu": usage.ru_utime + usage.ru_stime}), flush=True)
"""


class Server:
    """The fork server (a context manager): `run(args, ...)` → the child's exit status."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUSAI_FAULT")}
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
        env["OMP_NUM_THREADS"] = "1"  # tiny tensors: threads only spin on a shared machine
        self.env = env
        self.cpu_seconds = self.last_cpu = 0.0  # the children's CPU time (user + system)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(
        self,
        args: list[str],
        cwd: Path,
        output: Path,
        kill_after: float | None = None,
        **env: str,
    ) -> int:
        req = {
            "args": args,
            "cwd": str(cwd),
            "output": str(output),
            "env": {**self.env, **env},
            "kill_after": kill_after,
        }
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        self.cpu_seconds += reply["cpu"]
        self.last_cpu = reply["cpu"]
        return int(reply["rc"])

    def make_inputs(self, root: Path) -> dict[str, Path]:
        """`make_inputs(root)`, run in a child of the server."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"inputs": str(root), "harness": str(Path(__file__).parent)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        assert json.loads(self.proc.stdout.readline())["rc"] == 0, "make_inputs failed"
        return inputs_of(root)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # idle between requests: no need to wait for its exit
        self.proc.kill()
        self.proc.wait(timeout=30)


# --- fixtures: a tiny Llama, a corpus, the run config -----------------------------------


def make_inputs(root: Path) -> dict[str, Path]:
    """The tiny saved Llama (tests/lm), a word corpus and a run config using toy, synthetic
    and lm data sets (one SAE config, 2 seeds, 2 epochs), under `root`."""
    import yaml

    sys.path.insert(0, str(TESTS / "lm"))
    from _lm_text import tiny_tokenizer, words
    from _lm_tiny import tiny_model

    model, text = root / "llama", root / "text.txt"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    text.write_text("\n\n".join(words(i * 7, 60) for i in range(30)))
    lm = {
        "model": str(model),
        "layer": 1,
        "site": "resid_post",
        "corpus": str(text),
        "context_size": 16,
        "train_tokens": 16 * 16,
        "eval_contexts": 2,
        "batch_size": 4,
        "contexts_per_shard": 8,
    }
    cfg = {
        "toy": {
            "model": {"p": 23, "d_model": 32, "n_heads": 2, "d_mlp": 64},
            "train": {"train_frac": 0.7, "max_steps": 60, "check_every": 30},
        },
        "data": [
            {"name": "toy", "source": "toy"},
            {
                "name": "syn",
                "source": "synthetic",
                "synthetic": {"n_features": 16, "d": 8, "n_samples": 512},
            },
            {"name": "lm", "source": "lm", "lm": lm},
        ],
        "saes": [{"architecture": "topk", "d_sae": 16, "k": 2, "epochs": 2, "batch_size": 64}],
        "seeds": [1, 2],
        "metrics": {"n_bootstrap": 100, "functional_latents": 8, "functional_lm_latents": 4},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return inputs_of(root)


def inputs_of(root: Path) -> dict[str, Path]:
    return {"model": root / "llama", "text": root / "text.txt", "config": root / "run.yaml"}


def run_args(inputs: dict[str, Path], out: Path, cache: Path) -> list[str]:
    return ["run", str(inputs["config"]), "--out", str(out), "--cache-dir", str(cache), "--quiet"]


def extract_args(inputs: dict[str, Path], out: Path) -> list[str]:
    model, text = str(inputs["model"]), str(inputs["text"])
    return ["extract", "--model", model, "--text", text, "--out", str(out), "--device", "cpu"] + [
        "--context-size", "8", "--n-contexts", "160", "--layer", "0", "--layer", "2",
    ]  # fmt: skip


# --- what is finished on disk ------------------------------------------------------------


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def done_jobs(run_dir: Path) -> set[str]:
    """`<set>/<sae>` of every job whose job.json is complete and valid."""
    out = set()
    for f in run_dir.glob("saes/*/*/job.json"):
        rec = _json(f)
        if isinstance(rec, dict) and {"key", "result", "artifacts"} <= set(rec):
            if all((f.parent / a).is_file() for a in rec["artifacts"]):
                out.add(f"{f.parent.parent.name}/{f.parent.name}")
    return out


def finished(root: Path) -> dict[str, str]:
    """Finished things under `root` → the path prefix no later run may write to: jobs (a
    valid job.json), toy-model cache entries (config.json) and store shards that match
    their index."""
    out = {}
    for f in root.rglob("job.json"):
        d = f.parent
        if f"{d.parent.name}/{d.name}" in done_jobs(d.parents[2]):
            out[f"job {d.parent.name}/{d.name}"] = str(d) + os.sep
    for f in root.glob("**/toy/*/config.json"):
        out[f"toy cache {f.parent.name}"] = str(f.parent) + os.sep
    for f in root.rglob("index.json"):
        index = _json(f)
        for s in (index or {}).get("shards", []) if isinstance(index, dict) else []:
            p = f.parent / s["file"]
            if p.is_file() and _sha(p) == s["sha256"]:
                out[f"shard {p.relative_to(root)}"] = str(p)
    return out


def temp_files(root: Path) -> list[str]:
    """Temp files and directories (`.*.tmp…`) under `root`."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if ".tmp" in p.name)


# --- a chain of kills --------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    label: str  # the stage, for the benchmark's table
    glob: str  # HUSAI_FAULT_PATH
    n: int = 1
    phase: str = "partial"
    after: float | None = None  # a timer kill instead: SIGKILL after this many seconds


@dataclass
class Link:
    point: Point | None
    rc: int
    cpu: float  # seconds (user + system)
    problems: list[str] = field(default_factory=list)


def launch(server: Server, args: list[str], root: Path, tag: str, point: Point | None) -> Link:
    """Run `args` (cwd `root`) with `point`'s fault, or none; check that it died by SIGKILL
    at a fault point (exit status 0 without a point) and rewrote nothing that was finished
    before it started."""
    before = finished(root)
    log, output = root / f"log_{tag}.txt", root / f"out_{tag}.txt"
    env = {"HUSAI_FAULT_LOG": str(log)}
    if point is not None and point.after is None:
        env |= {"HUSAI_FAULT": f"kill@{point.n}:{point.phase}", "HUSAI_FAULT_PATH": point.glob}
    rc = server.run(args, root, output, kill_after=point and point.after, **env)
    link = Link(point, rc, server.last_cpu)
    want = 0 if point is None else -9
    if rc != want and (point is None or point.after is None):
        link.problems.append(f"exit status {rc}, not {want}\n{output.read_text()[-3000:]}")
    for line in log.read_text().splitlines() if log.is_file() else []:
        path = line.split("\t", 1)[1]
        for what, prefix in before.items():
            if path == prefix or path.startswith(prefix):
                link.problems.append(f"{what} was finished before this run, rewritten: {path}")
    return link


def store_content(store: Path) -> dict[str, str]:
    """A store directory's content: index.json and every file named in it (sha256)."""
    out = {}
    for index in sorted(store.rglob("index.json")):
        out[str(index.relative_to(store))] = _sha(index)
        for s in json.loads(index.read_text())["shards"]:
            f = index.parent / s["file"]
            out[str(f.relative_to(store))] = _sha(f)
    return out


RUN_POINTS = [
    Point("toy-model cache", "*/toy/*/model.safetensors", 1, "partial"),
    Point("toy-model cache", "*/toy/*/config.json", 1, "renamed"),
    Point("toy-model copy", "*/.toy_model.tmp/*", 1, "copy"),
    Point("store index", "*/stores/*/index.json", 1, "written"),
    Point("store shards", "*/stores/*/shard_00000.safetensors", 1, "partial"),
    Point("store shards", "*/stores/*/shard_00001.safetensors", 1, "renamed"),
    Point("store link", "*/data/lm/.store.tmp/*", 2, "copy"),
    Point("data sets", "*/data/lm/eval_contexts.safetensors", 1, "written"),
    Point("data sets", "*/data/toy/activations.safetensors", 1, "partial"),
    Point("data sets", "*/data/syn/activations.safetensors", 1, "renamed"),
    Point("SAE seeds", "*/saes/toy/topk/seed_1/sae_weights.safetensors", 1, "partial"),
    Point("SAE seeds", "*/saes/toy/topk/seed_2/cfg.json", 1, "renamed"),
    Point("job.json", "*/saes/toy/topk/job.json", 1, "written"),
    Point("job.json", "*/saes/syn/topk/job.json", 1, "renamed"),
    Point("SAE seeds", "*/saes/lm/topk/seed_1/cfg.json", 1, "partial"),
    Point("metrics.json", "*/run/metrics.json", 1, "partial"),
    Point("manifest", "*/run/manifest.json", 1, "written"),
    Point("figures", "*/run/figures/pwmcc_heatmap_*", 1, "partial"),
    Point("figures", "*/run/figures/training_curve.png", 1, "renamed"),
    Point("report.md", "*/run/report.md", 1, "written"),
    Point("manifest", "*/run/manifest.json", 2, "partial"),
]

EXTRACT_POINTS = [
    Point("store index", "*/blocks.0.hook_resid_post/index.json", 1, "start"),
    Point("store shards", "*/blocks.2.hook_resid_post/shard_00000.safetensors", 1, "partial"),
    Point("store shards", "*/blocks.0.hook_resid_post/shard_00001.safetensors", 1, "renamed"),
    Point("store shards", "*/blocks.2.hook_resid_post/shard_00002.safetensors", 1, "written"),
    Point("store index", "*/blocks.2.hook_resid_post/index.json", 3, "partial"),
]
