"""Typed, validated configs. Field descriptions double as `husai run --help` documentation.

Every config is frozen and forbids unknown keys; `load_run_config` turns any validation
problem into one `HusaiError` line naming the field. `SAEConfig` (the shared SAE fields plus
the architecture's own `params`, given flat) lives with the architectures in
`husai.sae.config` and is re-exported here.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    model_validator,
)

from husai.errors import HusaiError
from husai.sae.config import SAEConfig
from husai.sae.config import format_error as format_error
from husai.sae.registry import REGISTRY, field_owners

__all__ = ["SAEConfig"]  # re-exported (with the configs defined here)

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    tomllib = None  # type: ignore[assignment]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % q for q in range(2, int(n**0.5) + 1))


MAX_P = 4099  # p² pairs are trained on full-batch; also keeps the primality check instant
MAX_CONFIG_VALUES = 100_000  # values in a config file, YAML aliases expanded
MAX_CONFIG_BYTES = 2**20
MAX_CONFIG_DEPTH = 64  # [ / { nesting
MAX_SWEEP_POINTS = 10_000


def check_name(kind: str, name: str) -> None:
    """A data set or SAE label names a directory: non-empty, no '/', '\\', NUL, '.' or '..'."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(
            f"{kind} {name!r} must be non-empty and not '.' or '..', with no '/', '\\' or NUL"
        )


def hook_names(n_layers: int) -> list[str]:
    """Named hook points of the toy transformer, in forward order."""
    names = ["embed"]
    for layer in range(n_layers):
        names += [
            f"blocks.{layer}.{h}"
            for h in ("resid_pre", "attn_out", "resid_mid", "mlp_post", "mlp_out", "resid_post")
        ]
    return names


class ToyModelConfig(Strict):
    """The modular-arithmetic transformer (Nanda et al. style: no LayerNorm, ReLU MLP)."""

    p: int = Field(
        113, ge=3, le=MAX_P, description=f"modulus; inputs are pairs (a, b) in Z_p (≤ {MAX_P})"
    )
    op: Literal["add", "sub", "mul"] = Field("add", description="label = (a op b) mod p")
    n_layers: int = Field(1, ge=1, le=2, description="transformer blocks (1 or 2)")
    d_model: int = Field(128, gt=0, description="residual stream width")
    n_heads: int = Field(4, gt=0, description="attention heads (must divide d_model)")
    d_mlp: int = Field(512, gt=0, description="MLP hidden width")

    @model_validator(mode="after")
    def _check(self) -> ToyModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if not is_prime(self.p):
            raise ValueError(
                f"p ({self.p}) must be prime (Z_p must be a field for the Fourier check)"
            )
        return self

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class ToyTrainConfig(Strict):
    """Full-batch AdamW training, stopped when the model has grokked *and* is Fourier-sparse."""

    seed: int = Field(0, description="seed for the train/test split and the initial weights")
    train_frac: float = Field(0.5, gt=0, lt=1, description="fraction of all p² pairs trained on")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas")
    max_steps: int = Field(3000, gt=0, description="step cap")
    check_every: int = Field(50, gt=0, description="evaluate stopping criterion every N steps")
    target_test_acc: float = Field(0.99, gt=0, le=1, description="stop: test accuracy ≥ this")
    fourier_mass: float = Field(
        0.9,
        gt=0,
        le=1,
        description="key frequencies: smallest set holding this embedding-norm share",
    )
    max_key_freqs: int = Field(8, gt=0, description="stop: at most this many key frequencies")


class ToyConfig(Strict):
    model: ToyModelConfig = ToyModelConfig()
    train: ToyTrainConfig = ToyTrainConfig()


class ActivationConfig(Strict):
    """Which activations the SAEs are trained on."""

    hook: str = Field("blocks.0.resid_post", description="hook point of the toy model")
    position: Literal["answer", "all"] = Field(
        "answer", description="'answer' = the '=' token only; 'all' = every position"
    )
    split: Literal["all", "train", "test"] = Field(
        "all", description="which (a, b) pairs: all p², or the toy model's train/test split"
    )


class MetricsConfig(Strict):
    """How consistency is measured and tested."""

    thresholds: tuple[float, ...] = Field(
        (0.5, 0.7, 0.9), description="|cos| thresholds for the shared-latent fraction"
    )
    ci_level: float = Field(0.95, gt=0, lt=1, description="bootstrap confidence level")
    n_bootstrap: int = Field(10_000, ge=100, description="bootstrap resamples")
    baseline_seed: int = Field(0, description="seed of the matched random dictionaries")
    block_size: int = Field(
        1024, gt=0, description="rows per block in similarity search (memory ∝ block × n)"
    )
    functional: bool = Field(
        True,
        description="functional correspondence of matched latents (toy-model and LM data "
        "sets): ablation fingerprints, steering and substitution, matched vs random partners",
    )
    functional_latents: int = Field(
        64, ge=1, description="toy: latents sampled per SAE configuration (over seed pairs)"
    )
    functional_probes: int = Field(
        128, ge=2, description="toy: probe inputs (seeded sample of the test split)"
    )
    functional_lm_latents: int = Field(
        8, ge=1, description="LM: latents sampled per SAE configuration (over seed pairs)"
    )
    functional_lm_contexts: int = Field(
        1, ge=1, description="LM: probe contexts (the first held-out ones)"
    )
    functional_steer: float = Field(
        0.5, gt=0, description="steering α as a multiple of the mean activation norm at the hook"
    )
    functional_top_k: int = Field(
        10, ge=1, description="LM: top raised tokens compared under steering (toy: the top class)"
    )
    probing: bool = Field(
        True,
        description="sparse probing (SAEBench's protocol): k-sparse probes on each SAE's "
        "latents vs probes on the raw activations, on labelled tasks (toy: answer class, a, "
        "b; LM: token properties of the held-out tokens)",
    )
    probing_ks: tuple[PositiveInt, ...] = Field(
        (1, 2, 5, 10, 20), min_length=1, description="latents (or raw dimensions) per probe"
    )
    probing_tie: float = Field(
        0.01,
        ge=0,
        description="AUC margin: an SAE probe wins (loses) only when its seed CI lies above "
        "(below) the baseline by more than this; else a tie",
    )
    probing_min_positives: int = Field(
        20, ge=2, description="probing tasks with fewer positives (or negatives) are skipped"
    )
    variants: Literal["full", "decoder", "off"] = Field(
        "full",
        description="metric variants beside pwmcc / hungarian_mcc, per seed pair of trained, "
        "random and at-init SAEs: full = Song's PW-MCC (signed Hungarian), the Hungarian − "
        "max-|cos| gap and the Paulo & Belrose shared-rate curve (3 more matchings per pair: "
        "signed decoder, signed and |cos| encoder); decoder = PW-MCC and the gap only (1 more "
        "matching, no encoder matchings, no curve); off = none (for large widths: at 16k "
        "latents each matching is a streamed top-m pass)",
    )
    consensus: bool = Field(
        True,
        description="the consensus block: latents grouped across seeds (decoder |cos| ≥ 0.7; "
        "husai consensus) for trained, random and at-init SAEs, and the consensus "
        "dictionary's quality (toy, synthetic, one-layer LM sets; not transcoders)",
    )
    consensus_refit_epochs: int = Field(
        5,
        ge=0,
        description="epochs refitting the consensus dictionary's encoder with its decoder "
        "frozen (0 = report the averaged encoder only)",
    )


STORE_DTYPES = ("float32", "bfloat16", "float16")


class LMDataConfig(Strict):
    """Activations of a language model (source = lm): one site of one layer, captured over
    a corpus cut into fixed-length contexts, held in a sharded store on disk. The first
    `train_tokens` // `context_size` contexts train the SAEs; the next `eval_contexts` are
    held out for evaluation (quality, next-token loss with the SAE spliced in)."""

    model: str = Field(
        "smollm2", description="a packaged model's name (smollm2) or a local model directory"
    )
    layer: int = Field(15, ge=0, description="0-based block index")
    layers: list[int] | None = Field(
        None,
        description="≥ 2 distinct block indices (instead of `layer`, which then mirrors the "
        "first): a multi-layer set for "
        "RouteSAE, each row the layers' activations at `site` of one token, concatenated "
        "layer-major; its SAEs must be routesae (n_layers set to the count)",
    )
    site: str = Field(
        "resid_post",
        description="resid_pre, attn_out, resid_mid, mlp_in, ln2_normalized, mlp_out, "
        "resid_post (TransformerLens names: blocks.L.hook_<site>)",
    )
    corpus: str | None = Field(
        None,
        description="a .txt / .jsonl / token-ids file; null = the embedded Python "
        "standard-library documentation (pydoc topics and the docstrings of its sources)",
    )
    text_field: str = Field("text", description="the text field of a .jsonl corpus")
    context_size: int = Field(128, ge=2, description="tokens per context (BOS included)")
    prepend_bos: bool = Field(True, description="start every context with the BOS token")
    train_tokens: int = Field(
        204_800, gt=0, description="tokens run through the model for training contexts"
    )
    eval_contexts: int = Field(16, ge=1, description="held-out contexts for evaluation")
    ood: str | None = Field(
        None,
        description="an out-of-distribution corpus for the OOD gate: a .txt / .jsonl / "
        "token-ids file, or stdlib-code (built in: the Python code of the standard library's "
        "sources, docstrings and comments stripped: code, where the default corpus is "
        "documentation prose); its first `ood_contexts` contexts are captured like the "
        "held-out ones and the SAEs' EV there is quality.ood (EV drop: held-out − OOD); not "
        "for a multi-layer set",
    )
    ood_contexts: int = Field(16, ge=1, description="contexts of the `ood` corpus evaluated")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the stored activations"
    )
    batch_size: int = Field(8, gt=0, description="contexts per forward pass")
    contexts_per_shard: int = Field(64, gt=0, description="contexts per store shard")
    drop_first: bool = Field(True, description="drop position 0 (the BOS / attention sink)")
    drop_bos: bool = Field(True, description="drop every BOS token inside a context")
    outlier_factor: float | None = Field(
        None, gt=1, description="tokens above this × their context's median norm are outliers"
    )
    outliers: Literal["drop", "clip"] = Field("drop", description="drop or clip outliers")
    normalize: Literal["none", "expected_average_only_in"] = Field(
        "expected_average_only_in",
        description="scale activations so their mean norm is √d (SAELens's name); the "
        "scale is in the store's index and in cfg.json",
    )

    @model_validator(mode="after")
    def _check(self) -> LMDataConfig:
        from husai.lm.sites import KINDS

        if self.site not in KINDS:
            raise ValueError(f"unknown site {self.site!r} (valid: {', '.join(KINDS)})")
        if self.layers is not None:
            if "layer" in self.model_fields_set and self.layer != self.layers[0]:
                raise ValueError("set `layer` or `layers`, not both")
            if len(set(self.layers)) < 2 or len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers {self.layers}: need ≥ 2 distinct layers (or `layer`)")
            if min(self.layers) < 0:
                raise ValueError(f"layers {self.layers}: block indices must be ≥ 0")
            if self.outlier_factor is not None and self.outliers == "drop":
                raise ValueError(
                    "a multi-layer set (layers) cannot drop outliers per layer (rows must "
                    "align across layers); use outliers: clip or no outlier_factor"
                )
            if self.ood is not None:
                raise ValueError("ood is not measured for a multi-layer set (layers)")
            # `layer` mirrors the first layer, so a dumped config parses back unchanged
            object.__setattr__(self, "layer", self.layers[0])
        if self.train_tokens < self.context_size:
            raise ValueError(
                f"train_tokens ({self.train_tokens}) holds no context of {self.context_size}"
            )
        return self

    @property
    def n_train_contexts(self) -> int:
        return self.train_tokens // self.context_size

    def extraction(self) -> dict[str, Any]:
        """The fields that decide the training forward passes (not layer, site or the OOD
        corpus): data sets equal in these share one extraction."""
        return self.model_dump(
            mode="json", exclude={"layer", "layers", "site", "ood", "ood_contexts"}
        )

    @property
    def block_indices(self) -> list[int]:
        """The layers whose activations make up a row: `layers`, or [`layer`]."""
        return list(self.layers) if self.layers is not None else [self.layer]


class DataConfig(Strict):
    """One activation set the SAEs are trained on."""

    name: str = Field("toy", description="label in reports and directory names")
    source: Literal["toy", "synthetic", "file", "lm"] = Field(
        "toy",
        description="toy = the toy model's `activations` hook; synthetic = generated with "
        "known ground truth (`synthetic` fields); file = an activation file (`path`); "
        "lm = a language model's activations (`lm` fields)",
    )
    lm: LMDataConfig | None = Field(None, description="the language model data (source = lm)")
    synthetic: dict[str, Any] | None = Field(
        None, description="husai.synthetic.SyntheticConfig fields (source = synthetic)"
    )
    path: str | None = Field(None, description="activation file (source = file)")
    target_hook: str | None = Field(
        None,
        description="source = toy: a transcoder data set: inputs at `activations.hook`, "
        "targets at this later hook (e.g. blocks.0.mlp_out); its SAEs are transcoders, scored "
        "against the target; null = SAEs on `activations.hook`",
    )
    control: Literal["random_init"] | None = Field(
        None,
        description="source = toy: a random-model control: the toy model's architecture "
        "with re-initialised, untrained weights (`control_seed`), same hook / position / "
        "split; its SAEs are trained and scored like the real model's (no downstream)",
    )
    control_seed: int | None = Field(
        None, description="init seed of the control model (null = the toy model's own seed)"
    )
    ood: Literal["test", "operands"] | None = Field(
        None,
        description="source = toy: EV of the trained SAEs on out-of-distribution rows, "
        "quality.ood: test = the toy model's test-split pairs (needs activations.split "
        "train: pairs neither the model nor the SAEs saw); operands = the same hook at the "
        "a and b token positions (needs position answer)",
    )
    sae_overrides: dict[str, Any] | None = Field(
        None,
        description="SAEConfig fields set for every SAE trained on this data set (an "
        "architecture's own field, e.g. k, for the SAEs whose architecture has it; e.g. "
        "{k: 4, target_l0: 4} for a synthetic set with 4 active features)",
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        check_name("name", self.name)
        if self.source == "synthetic":
            from husai.synthetic import SyntheticConfig

            SyntheticConfig.model_validate(self.synthetic or {})
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs `path`")
        if (self.source == "lm") != (self.lm is not None):
            raise ValueError("`lm` fields go with source 'lm' (and source 'lm' needs them)")
        if self.target_hook is not None and self.source != "toy":
            raise ValueError("target_hook needs source 'toy'")
        for f in ("control", "ood"):
            if getattr(self, f) is not None and self.source != "toy":
                lm = " (an lm set's OOD corpus: lm.ood)" if f == "ood" else ""
                raise ValueError(f"{f} needs source 'toy'{lm}")
        if self.ood is not None and self.target_hook is not None:
            raise ValueError("ood is not measured for a transcoder data set (target_hook)")
        return self


ABBREVIATIONS = {
    "d_sae": "d",
    "expansion_factor": "x",
    "l1_coefficient": "l1c",
    "l0_coefficient": "l0c",
    "auxk_coefficient": "auxk",
    "batch_size": "bs",
    "epochs": "ep",
    "consistency_penalty": "",
    "init": "",
    "consistency_lambda": "lam",
    "target_l0": "l0",
    "resample_every_epochs": "rs",
}


def _label_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "-".join(_label_value(x) for x in v)
    return format(v, "g") if isinstance(v, float) else str(v)


class SweepConfig(Strict):
    """A grid of SAE configurations: `base` fields × every combination of `grid` values."""

    base: dict[str, Any] = Field(
        default_factory=dict, description="SAEConfig fields shared by every grid point"
    )
    grid: dict[str, list[Any]] = Field(
        description="SAEConfig field → values; the cartesian product (first field varying "
        "slowest) gives the SAE configurations, labelled like topk_k8_d512"
    )

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        known = sorted((set(SAEConfig.model_fields) | set(field_owners())) - {"name", "params"})
        for part, keys in (("base", self.base), ("grid", self.grid)):
            for f in keys:
                if f == "name":
                    raise ValueError(f"{part}: `name` is set by the sweep (labels like topk_k8)")
                if f not in known:
                    raise ValueError(f"{part}: unknown SAE field {f!r} (known: {', '.join(known)})")
        if not self.grid:
            raise ValueError("grid: needs at least one field")
        n = 1
        for f, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{f}: needs at least one value")
            if f in self.base:
                raise ValueError(f"{f!r} is in both base and grid")
            n *= len(values)
        if n > MAX_SWEEP_POINTS:
            raise ValueError(f"grid: {n} points (at most {MAX_SWEEP_POINTS})")
        return self

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, grid values) of every grid point, in order."""
        out = []
        for combo in itertools.product(*self.grid.values()):
            point = dict(zip(self.grid, combo, strict=True))
            arch = point.get("architecture", self.base.get("architecture", "topk"))
            parts = [str(arch)] + [
                ABBREVIATIONS.get(f, f) + _label_value(v)
                for f, v in point.items()
                if f != "architecture"
            ]
            out.append(("_".join(parts), point))
        labels = [label for label, _ in out]
        if len(set(labels)) != len(labels):
            raise ValueError(f"grid values give duplicate labels ({labels})")
        return out

    def expand(self) -> list[dict[str, Any]]:
        """The SAE configurations of the grid (validated), as `saes` entries."""
        saes = []
        for label, point in self.points():
            entry = {**self.base, **point, "name": label}
            try:
                SAEConfig.model_validate(entry)
            except ValidationError as e:
                raise ValueError(f"sweep: point {label}: {format_error(e, '')}") from None
            saes.append(entry)
        return saes

    def summary(self) -> dict[str, Any]:
        """What metrics.json records: the grid (`fields` keeps its order) and, in order, each
        configuration's label and grid values."""
        return {
            "base": self.base,
            "grid": self.grid,
            "fields": list(self.grid),
            "points": [{"label": label, "values": point} for label, point in self.points()],
        }


class RunConfig(Strict):
    """`husai run`: (toy model →) activations → SAEs × seeds → metrics → report."""

    toy: ToyConfig = ToyConfig()
    activations: ActivationConfig = ActivationConfig()
    data: tuple[DataConfig, ...] = Field(
        (DataConfig(),), description="activation sets; every SAE config is trained on each"
    )
    saes: tuple[SAEConfig, ...] = Field(
        (SAEConfig(architecture="topk"), SAEConfig(architecture="relu")),
        description="SAE configurations; each is trained once per seed",
    )
    seeds: tuple[int, ...] = Field((42, 123, 456, 789, 1011), description="SAE seeds")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="where language models run and SAEs train (auto = cuda if available)",
    )
    metrics: MetricsConfig = MetricsConfig()
    sweep: SweepConfig | None = Field(
        None, description="a grid of SAE configurations; expands into `saes` (see `husai sweep`)"
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_sweep(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("sweep") is None:
            return data
        try:
            sweep = SweepConfig.model_validate(data["sweep"])
        except ValidationError as e:
            raise ValueError(format_error(e, "sweep")) from None
        saes = sweep.expand()
        if "saes" in data and _sae_list(data["saes"]) != _sae_list(saes):
            raise ValueError("set either `saes` or `sweep`, not both")
        return {**data, "sweep": sweep, "saes": saes}

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        valid = hook_names(self.toy.model.n_layers)
        if self.activations.hook not in valid:
            raise ValueError(f"unknown hook {self.activations.hook!r} (valid: {', '.join(valid)})")
        for d in self.data:
            if d.target_hook is None:
                continue
            if d.target_hook not in valid:
                raise ValueError(
                    f"data {d.name}: unknown target_hook {d.target_hook!r} "
                    f"(valid: {', '.join(valid)})"
                )
            if valid.index(d.target_hook) <= valid.index(self.activations.hook):
                raise ValueError(
                    f"data {d.name}: target_hook {d.target_hook!r} must come after the input "
                    f"hook {self.activations.hook!r} in the forward pass"
                )
        for d in self.data:
            if d.ood == "test" and self.activations.split != "train":
                raise ValueError(f"data {d.name}: ood test needs activations.split train")
            if d.ood == "operands" and self.activations.position != "answer":
                raise ValueError(f"data {d.name}: ood operands needs activations.position answer")
        if len(self.seeds) < 2:
            raise ValueError("need at least 2 seeds to measure consistency")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        names = [d.name for d in self.data]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"data: need at least one data set, with distinct names (got {names})")
        labels = [s.label for s in self.saes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"SAE labels must be distinct (got {labels}); set `name`")
        if not self.saes:
            raise ValueError("saes: need at least one SAE configuration")
        for label in labels:
            check_name("SAE label", label)
        for d in self.data:
            if d.sae_overrides and {"name", "architecture"} & set(d.sae_overrides):
                raise ValueError(f"data {d.name}: sae_overrides cannot set name or architecture")
            archs = sorted({s.architecture for s in self.saes})
            for key in (d.sae_overrides or {}).keys() & field_owners().keys():
                if not set(field_owners()[key]) & set(archs):
                    raise ValueError(
                        f"data {d.name}: sae_overrides: {key} is not a field of any SAE's "
                        f"architecture here ({', '.join(archs)}; it belongs to "
                        f"{', '.join(field_owners()[key])})"
                    )
            try:
                self.saes_for(d)
            except ValidationError as e:
                msg = format_error(e).removeprefix("config: ")
                raise ValueError(f"data {d.name}: sae_overrides: {msg}") from None
        return self

    def saes_for(self, data: DataConfig) -> tuple[SAEConfig, ...]:
        """The SAE configs as trained on `data` (its `sae_overrides` applied; an
        architecture's own field only to the SAEs whose architecture has it)."""
        saes = self._overridden(data)
        n = len(data.lm.block_indices) if data.lm is not None else 1
        return tuple(_routed(s, n, data.name) for s in saes) if data.lm is not None else saes

    def _overridden(self, data: DataConfig) -> tuple[SAEConfig, ...]:
        if not data.sae_overrides:
            return self.saes
        owners = field_owners()
        out = []
        for s in self.saes:
            own = REGISTRY[s.architecture].Params.model_fields
            over = {k: v for k, v in data.sae_overrides.items() if k in own or k not in owners}
            base = s.model_dump()
            if over.get("target_l0") is not None and "k" not in over:
                base.pop("k", None)  # target_l0 sets it
            out.append(SAEConfig.model_validate({**base, **over}))
        return tuple(out)

    @property
    def uses_toy(self) -> bool:
        return any(d.source == "toy" for d in self.data)


def _routed(s: SAEConfig, n: int, data: str) -> SAEConfig:
    """An LM data set's SAE: on a multi-layer set (n layers) a routesae with n_layers n
    (set when left at 1); on a one-layer set, no routesae with n_layers > 1."""
    given = getattr(s.params, "n_layers", None)
    if n == 1:
        if given not in (None, 1):
            raise ValueError(
                f"data {data}: {s.label}: a routesae with n_layers {given} needs a multi-layer "
                "set (lm.layers)"
            )
        return s
    if s.architecture != "routesae":
        raise ValueError(
            f"data {data}: a multi-layer set ({n} layers) trains routesae SAEs only, not "
            f"{s.label} ({s.architecture})"
        )
    if given == n:
        return s
    if given != 1:
        raise ValueError(f"data {data}: {s.label}: n_layers {given} ≠ the set's {n} layers")
    return SAEConfig.model_validate({**s.model_dump(), "n_layers": n})


def _sae_list(entries: Any) -> list[SAEConfig] | None:
    try:
        return [SAEConfig.model_validate(e) for e in entries]
    except (ValidationError, TypeError):
        return None


def parse_config(data: dict[str, Any], cls: type[Strict]) -> Any:
    """Validate a (possibly partial) dict as `cls`; missing fields take their defaults."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise HusaiError(format_error(e)) from None


def parse_run_config(data: dict[str, Any]) -> RunConfig:
    return parse_config(data, RunConfig)


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML or TOML file (one-line HusaiError otherwise). Bounded: YAML
    aliases may not expand past MAX_CONFIG_VALUES values, nesting may not recurse out."""
    path = Path(path)
    if not path.is_file():
        raise HusaiError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise HusaiError(f"{path}: config larger than {MAX_CONFIG_BYTES // 2**20} MiB")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise HusaiError(f"{path}: config is not UTF-8 text (byte {e.start})") from None
    if _bracket_depth(text) > MAX_CONFIG_DEPTH:  # PyYAML's scanner is quadratic in it
        raise HusaiError(f"{path}: cannot parse config (nested deeper than {MAX_CONFIG_DEPTH})")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise HusaiError(f"{path}: cannot parse config ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise HusaiError(f"{path}: cannot parse config (nested too deeply)") from None
    if not isinstance(data, dict):
        raise HusaiError(f"{path}: config must be a mapping at top level")
    if _count_values(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise HusaiError(
            f"{path}: config holds more than {MAX_CONFIG_VALUES} values (YAML aliases expanded)"
        )
    return data


def _bracket_depth(text: str) -> int:
    """The deepest nesting of [ and { (quotes ignored: an over-estimate at worst)."""
    depth = deepest = 0
    for m in re.finditer(r"[\[\]{}]", text):
        depth = depth + 1 if m.group() in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def _count_values(data: Any, limit: int) -> int:
    """Values in `data`, shared (aliased) ones counted each time; stops past `limit` (an
    iterative walk: a billion-laughs file costs `limit` steps, deep nesting no recursion)."""
    n, stack = 0, [data]
    while stack and n <= limit:
        x = stack.pop()
        n += 1
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return n


def load_run_config(path: Path | None) -> RunConfig:
    """Read a YAML or TOML file (or nothing: the built-in default)."""
    return RunConfig() if path is None else parse_run_config(read_config_file(path))
