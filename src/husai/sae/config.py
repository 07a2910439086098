"""`SAEConfig`: what every architecture shares, plus the architecture's own `params`.

The architecture's hyperparameters are its `Params` model (beside its class in
`husai.sae.architectures`); `SAEConfig.params` holds an instance of it. Configs stay flat
for users and on disk: `{architecture: topk, k: 8, d_sae: 256}` routes k into the TopK
params, a field of another architecture is an error naming its owners, and
`model_dump()` is flat again (shared fields + this architecture's own only). Re-exported
by `husai.config`, which holds the other configs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from husai.errors import HusaiError
from husai.sae.base import ArchParams
from husai.sae.registry import REGISTRY, field_owners

DEFAULT_ARCHITECTURE = "topk"


def format_error(e: ValidationError, prefix: str = "config") -> str:
    """`prefix: field.path: message (+n more)`; no field path for model-level errors. An
    architecture's own fields are named flat (`saes.0.k`, not `saes.0.params.k`)."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if x != "params")
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return ": ".join(p for p in (prefix, loc, msg + more) if p)


def foreign_field_error(field: str, architecture: str) -> str:
    owners = ", ".join(field_owners()[field])
    return f"{field} is not a field of architecture {architecture} (it belongs to {owners})"


class SAEConfig(BaseModel):
    """One SAE configuration; trained once per seed (all seeds together as an ensemble)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="label in reports (default: architecture)")
    architecture: str = Field(
        DEFAULT_ARCHITECTURE,
        description=f"registered architecture: {', '.join(sorted(REGISTRY))}",
    )
    d_sae: int | None = Field(1024, gt=0, description="number of latents")
    expansion_factor: float | None = Field(
        None, gt=0, description="d_sae = expansion_factor × d_in (used when d_sae is null)"
    )
    params: SerializeAsAny[ArchParams] = Field(
        description="the architecture's own fields (its `Params`; given flat, e.g. k: 8)"
    )
    target_l0: float | None = Field(
        None,
        gt=0,
        description="the L0 every architecture aims for (one knob for matched-sparsity "
        "comparisons): TopK family: sets k (must be a whole number); relu, jumprelu, gated: "
        "the sparsity weight (starting from l1_coefficient / l0_coefficient) is adapted "
        "during training so that L0 approaches it (husai.sae.l0_target); null = off",
    )
    init: Literal["random", "data"] = Field(
        "random",
        description="decoder init: random unit rows, or unit directions of sampled, centred "
        "training rows (encoder tied to the decoder either way)",
    )
    resample_every_epochs: int = Field(
        0,
        ge=0,
        description="resample dead latents (Bricken et al. 2023) after every n-th epoch of the "
        "first half of training; 0 = off",
    )
    consistency_penalty: Literal["none", "reference", "assignment", "joint"] = Field(
        "none",
        description="consistency-regularised training (husai.sae.regularise): add "
        "consistency_lambda × (1 − mean matched |cos| of the decoder rows) to each seed's loss; "
        "partners: reference = each latent's best match in a frozen reference decoder; "
        "assignment = a one-to-one (Hungarian) matching to it; joint = matchings to the "
        "other seeds of the ensemble (no reference)",
    )
    consistency_lambda: float = Field(
        0.0,
        ge=0,
        description="weight of the consistency penalty (dimensionless, in [0, λ], while the "
        "MSE is summed over d_in); 0 = trained as without the penalty, which is still reported",
    )
    reassign_every: int = Field(
        50,
        gt=0,
        description="assignment, joint: recompute the Hungarian matchings every this many "
        "steps (fixed in between; joint: S(S−1)/2 matchings, ~0.05–0.2 s each at 1024 latents)",
    )
    reference_seed: int | None = Field(
        None,
        description="reference, assignment: seed of the default reference decoder, this config "
        "trained without the penalty (husai.sae.regularise.train_reference); null = the run's "
        "first seed",
    )
    trajectory_every_epochs: int = Field(
        0,
        ge=0,
        description="record the cross-seed PWMCC of the decoders every n epochs of training "
        "(the consistency trajectory: does agreement grow, plateau or fall?); 0 = off",
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant",
        description="learning rate after the warm-up (husai.sae.schedule): constant, or a "
        "cosine or linear decay from lr towards lr_min_fraction × lr at the end of training",
    )
    lr_warmup_steps: int = Field(
        0,
        ge=0,
        description="steps over which the learning rate rises linearly from 0 to lr (step t "
        "uses lr × (t + 1) / (lr_warmup_steps + 1)) before lr_schedule applies; 0 = off",
    )
    lr_min_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="lr_schedule cosine or linear: the learning rate decays towards this "
        "fraction of lr (0: towards 0)",
    )
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="L2 weight penalty (arXiv 2603.04198): add weight_decay × ‖W_enc‖² "
        "(summed over every entry of the seed's encoder; ≈ d_sae at init) to each seed's "
        "loss, so Adam sees its gradient (not decoupled decay). The encoder only: the decoder "
        "rows are kept at unit norm, where an L2 penalty on them is constant; 0 = off",
    )
    align_coefficient: float = Field(
        0.0,
        ge=0,
        description="encoder–decoder alignment (arXiv 2605.18629): add align_coefficient × "
        "the mean over latents of 1 − cos(the latent's encoder row, its decoder row) to each "
        "seed's loss (dimensionless, at most 2 × align_coefficient); SAEs only, not "
        "transcoders; 0 = off",
    )
    epochs: int = Field(20, gt=0, description="passes over the activation set")
    batch_size: int = Field(256, gt=0, description="activations per step")
    shuffle_buffer: int = Field(
        262_144,
        gt=0,
        description="rows each seed shuffles at a time when the training data comes in several "
        "blocks (an activation store's shards): whole blocks are drawn in a seeded order until "
        "this many rows are held, then shuffled (husai.sae.data); no effect on in-memory data",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="forward and loss in float32, or under bfloat16 autocast (weights and Adam "
        "stay float32)",
    )

    @model_validator(mode="before")
    @classmethod
    def _route(cls, data: Any) -> Any:
        """Flat keys → `params` (a field of another architecture is an error); TopK family:
        target_l0 sets k (an explicit, different k is an error)."""
        if not isinstance(data, dict):
            return data
        name = data.get("architecture", DEFAULT_ARCHITECTURE)
        arch = REGISTRY.get(name) if isinstance(name, str) else None
        if arch is None:
            raise ValueError(
                f"unknown architecture {name!r} (known: {', '.join(sorted(REGISTRY))})"
            )
        params = data.get("params", {})
        if isinstance(params, BaseModel):
            params = params.model_dump()
        if not isinstance(params, dict):
            return data  # pydantic reports the type
        shared, own, owners = set(cls.model_fields), arch.Params.model_fields, field_owners()
        out: dict[str, Any] = {}
        params = dict(params)
        for key, value in data.items():
            if key in shared or key not in own and key not in owners:
                out[key] = value  # unknown keys: extra="forbid" reports them
            else:
                params[key] = value
        for key in params:
            if key not in own and key in owners:
                raise ValueError(foreign_field_error(key, name))
        target = data.get("target_l0")
        if isinstance(target, (int, float)) and arch.uses_k:  # else pydantic reports the type
            if isinstance(target, float) and not (math.isfinite(target) and target.is_integer()):
                raise ValueError(f"target_l0 ({target}) sets k here: it must be a whole number")
            if params.get("k") not in (None, int(target)):
                raise ValueError(f"k ({params['k']}) and target_l0 ({target}) disagree; set one")
            params["k"] = int(target)
        return {**out, "params": params}

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any, info: ValidationInfo) -> Any:
        arch = REGISTRY.get(info.data.get("architecture", ""))
        return value if arch is None else arch.Params.model_validate(value)

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        if self.d_sae is None and self.expansion_factor is None:
            raise ValueError("set d_sae or expansion_factor")
        arch = REGISTRY[self.architecture]
        if self.target_l0 is not None and not (arch.coefficient_field or arch.uses_k):
            raise ValueError(f"target_l0 cannot be set for {self.architecture}")
        if self.d_sae is not None:
            self._check_k(self.d_sae)
        if getattr(self.params, "balance_rate", 0) > 0 and not arch.balances:
            raise ValueError(f"balance_rate is not supported by architecture {self.architecture}")
        if getattr(self.params, "multi_topk", 0) > 0:
            if not arch.supports_multi_topk:
                raise ValueError(f"multi_topk is not supported by architecture {self.architecture}")
            if self.params.balance_rate > 0:  # type: ignore[attr-defined]
                raise ValueError(  # biased choice: the top k aren't the first k of the top k'
                    "multi_topk and balance_rate cannot be combined"
                )
        if self.lr_min_fraction > 0 and self.lr_schedule == "constant":
            raise ValueError("lr_min_fraction is set but lr_schedule is 'constant'")
        if self.consistency_lambda > 0 and self.consistency_penalty == "none":
            raise ValueError("consistency_lambda is set but consistency_penalty is 'none'")
        return self

    def _check_k(self, d_sae: int) -> None:
        k = getattr(self.params, "k", None)
        if REGISTRY[self.architecture].uses_k and k is not None and k > d_sae:
            raise ValueError(f"k ({k}) must be ≤ d_sae ({d_sae})")

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Flat: the shared fields with this architecture's own in place of `params`."""
        out: dict[str, Any] = {}
        for key, value in handler(self).items():
            out.update(value if key == "params" else {key: value})
        return out

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> SAEConfig:
        """A config as saved in a cfg.json: older husai versions saved every architecture's
        fields (defaults of the others included), which are dropped here."""
        if not isinstance(data, dict):
            return cls.model_validate(data)  # pydantic's type error
        name = data.get("architecture", DEFAULT_ARCHITECTURE)
        arch = REGISTRY.get(name) if isinstance(name, str) else None
        if arch is None:
            return cls.model_validate(data)  # the unknown-architecture error
        owners, own = field_owners(), arch.Params.model_fields
        return cls.model_validate({k: v for k, v in data.items() if k in own or k not in owners})

    def with_fields(self, **fields: Any) -> SAEConfig:
        """A validated copy with (flat) fields replaced, e.g. `cfg.with_fields(k=8)`."""
        return type(self).model_validate({**self.model_dump(), **fields})

    @property
    def label(self) -> str:
        return self.name or self.architecture

    def resolve(self, d_in: int) -> SAEConfig:
        """Fix d_sae from the expansion factor once d_in is known."""
        if self.d_sae is not None:
            return self
        d_sae = max(1, round(self.expansion_factor * d_in))  # type: ignore[operator]
        try:
            self._check_k(d_sae)
        except ValueError as e:
            raise HusaiError(f"config: {e}") from None
        return self.model_copy(update={"d_sae": d_sae})
