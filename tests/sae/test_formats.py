"""Layout detection, hand-written checkpoints of each format, bad input, JumpReLU and Gated SAEs.

These need no interop library; tests/sae/test_interop_*.py check against the real ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.sae import build_sae, find_saes, load, save
from husai.sae.architectures.gated import GatedSAE
from husai.sae.architectures.jumprelu import JumpReLUSAE
from husai.sae.architectures.topk import TopKSAE
from husai.sae.formats import detect

D, F = 6, 10


def _randomize(sae, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return sae


def _x(n: int = 32) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("arch", ["jumprelu", "gated"])
def test_jumprelu_gated_round_trip_and_select(arch: str, tmp_path: Path) -> None:
    ens = _randomize(build_sae(SAEConfig(architecture=arch, d_sae=F), D, [3, 4]))
    one = ens.select(1)
    assert one.seeds == [4] and torch.equal(one.encode(_x()), ens.encode(_x())[1:])
    save(one, tmp_path / "s")
    assert detect(tmp_path / "s") == "saelens"
    back = load(tmp_path / "s")
    assert type(back) is type(one) and back.cfg == one.cfg and back.seeds == [4]
    for name, p in one.named_parameters():
        assert torch.equal(p, getattr(back, name)), name
    assert torch.equal(back(_x()), one(_x()))
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert raw["architecture"] == arch
    loss, _ = one.loss(_x().unsqueeze(0))  # trainable now (tests/sae/test_{arch}.py)
    assert loss.shape == (1,) and torch.isfinite(loss).all()


def test_jumprelu_and_gated_forward_formulas() -> None:
    jr = _randomize(build_sae(SAEConfig(architecture="jumprelu", d_sae=F), D, [0]))
    pre = (_x() - jr.b_dec[0]) @ jr.W_enc[0].T + jr.b_enc[0]
    want = torch.relu(pre) * (pre > jr.threshold[0])
    assert torch.allclose(jr.encode(_x())[0], want)
    g = _randomize(build_sae(SAEConfig(architecture="gated", d_sae=F), D, [0]), seed=1)
    x_c = _x() - g.b_dec[0]
    gate = (x_c @ g.W_enc[0].T + g.b_enc[0]) > 0
    mag = torch.relu(x_c @ (g.W_enc[0] * g.r_mag[0].exp()[:, None]).T + g.b_mag[0])
    assert torch.allclose(g.encode(_x())[0], gate * mag, atol=1e-6)
    assert isinstance(g, GatedSAE) and isinstance(jr, JumpReLUSAE)


def _saelens_dir(d: Path, arch: str, apply_b_dec: bool = True, **cfg) -> dict:
    g = torch.Generator().manual_seed(0)
    t = {
        "W_enc": torch.randn(D, F, generator=g),
        "W_dec": torch.randn(F, D, generator=g),
        "b_dec": torch.randn(D, generator=g),
    }
    extra = {"gated": ["b_gate", "b_mag", "r_mag"], "jumprelu": ["b_enc", "threshold"]}
    for n in extra.get(arch, ["b_enc"]):
        t[n] = torch.randn(F, generator=g) * 0.3
    d.mkdir(parents=True)
    save_file(t, str(d / "sae_weights.safetensors"))
    body = {"architecture": arch, "d_in": D, "d_sae": F, "apply_b_dec_to_input": apply_b_dec}
    (d / "cfg.json").write_text(json.dumps({**body, **cfg}))
    return t


@pytest.mark.parametrize("arch", ["jumprelu", "gated", "standard"])
def test_saelens_without_b_dec_centering_is_folded(arch: str, tmp_path: Path) -> None:
    t = _saelens_dir(tmp_path / "s", arch, apply_b_dec=False)
    sae = load(tmp_path / "s")
    x = _x()
    if arch == "gated":
        proj = x @ t["W_enc"]
        gate = proj + t["b_gate"] > 0
        want = gate * torch.relu(x @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"])
    else:
        pre = x @ t["W_enc"] + t["b_enc"]
        want = torch.relu(pre) * (pre > t.get("threshold", torch.zeros(F)))
    assert torch.allclose(sae.encode(x)[0], want, atol=1e-5)
    assert torch.equal(sae.W_dec[0], t["W_dec"])


def test_saelens_topk_k_locations_and_rescale(tmp_path: Path) -> None:
    _saelens_dir(tmp_path / "a", "topk", k=3)
    _saelens_dir(
        tmp_path / "b", "standard", activation_fn_str="topk", activation_fn_kwargs={"k": 4}
    )
    t = _saelens_dir(tmp_path / "c", "topk", k=3, rescale_acts_by_decoder_norm=True)
    a, b, c = (load(tmp_path / n) for n in "abc")
    assert isinstance(a, TopKSAE) and a.params.k == 3 and isinstance(b, TopKSAE) and b.params.k == 4
    norms = t["W_dec"].norm(dim=-1)
    pre = ((_x() - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms
    vals, idx = pre.topk(3)
    codes = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    want = codes @ (t["W_dec"] / norms[:, None]) + t["b_dec"]
    assert torch.allclose(c(_x())[0], want, atol=1e-5)


def _sparsify_dir(d: Path, seed: int = 0, **cfg) -> dict:
    g = torch.Generator().manual_seed(seed)
    t = {
        "encoder.weight": torch.randn(F, D, generator=g),
        "encoder.bias": torch.randn(F, generator=g) * 0.3,
        "W_dec": torch.randn(F, D, generator=g),
        "b_dec": torch.randn(D, generator=g),
    }
    d.mkdir(parents=True)
    save_file(t, str(d / "sae.safetensors"))
    body = {"activation": "topk", "k": 3, "num_latents": F, "d_in": D, "transcode": False}
    (d / "cfg.json").write_text(json.dumps({**body, **cfg}))
    return t


def test_sparsify_hand_written_and_run_directory(tmp_path: Path) -> None:
    t = _sparsify_dir(tmp_path / "one")
    sae = load(tmp_path / "one")
    assert detect(tmp_path / "one") == "sparsify" and isinstance(sae, TopKSAE)
    pre = torch.relu((_x() - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    vals, idx = pre.topk(3)
    want = torch.zeros_like(pre).scatter(-1, idx, vals) @ t["W_dec"] + t["b_dec"]
    assert torch.allclose(sae(_x())[0], want, atol=1e-5)
    run = tmp_path / "run"
    for hook in ("layers.1", "layers.0"):
        for s in (10, 2, 0):
            _sparsify_dir(run / hook / f"seed{s}", seed=s)
    _sparsify_dir(run / "best" / "layers.0" / "seed0")
    (run / "config.json").write_text("{}")
    (run / "state.pt").write_bytes(b"")
    found = find_saes(run)
    rel = [str(p.relative_to(run)) for p in found]
    assert rel == [f"layers.{h}/seed{s}" for h in (0, 1) for s in (0, 2, 10)]
    assert [load(p).seeds[0] for p in found[:3]] == [0, 2, 10]
    assert find_saes(tmp_path / "one") == [tmp_path / "one"]
    with pytest.raises(HusaiError, match="run directory holding 6 SAEs"):
        load(run)


def _dl_dir(d: Path, dict_class: str, state: dict, **trainer) -> None:
    d.mkdir(parents=True)
    torch.save(state, d / "ae.pt")
    cfg = {"trainer": {"dict_class": dict_class, "activation_dim": D, "dict_size": F, **trainer}}
    (d / "config.json").write_text(json.dumps(cfg))


def _dl_autoencoder_state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "bias": torch.randn(D, generator=g),
        "encoder.weight": torch.randn(F, D, generator=g),
        "encoder.bias": torch.randn(F, generator=g) * 0.3,
        "decoder.weight": torch.randn(D, F, generator=g),
    }


def test_dictionary_learning_hand_written(tmp_path: Path) -> None:
    s = _dl_autoencoder_state()
    _dl_dir(tmp_path / "ae", "AutoEncoder", s)
    sae = load(tmp_path / "ae")
    want = torch.relu((_x() - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"])
    want = want @ s["decoder.weight"].T + s["bias"]
    assert torch.allclose(sae(_x())[0], want, atol=1e-5)
    # a mid-run backup nests the state dict under "ae"; a checkpoint file can be given directly
    _dl_dir(tmp_path / "bk", "AutoEncoder", {"ae": s, "step": 10, "optimizer": {"lr": 1e-3}})
    assert torch.equal(load(tmp_path / "bk").W_dec, sae.W_dec)
    (tmp_path / "bk" / "checkpoints").mkdir()
    torch.save(s, tmp_path / "bk" / "checkpoints" / "ae_5.pt")
    assert torch.equal(load(tmp_path / "bk" / "checkpoints" / "ae_5.pt").W_enc, sae.W_enc)
    topk = {k: v for k, v in s.items() if k != "bias"} | {"b_dec": s["bias"]}
    topk |= {"k": torch.tensor(3, dtype=torch.int), "threshold": torch.tensor(0.25)}
    _dl_dir(tmp_path / "bt", "BatchTopKSAE", topk, k=3)
    bt = load(tmp_path / "bt")
    assert isinstance(bt, JumpReLUSAE) and torch.equal(bt.threshold, torch.full((1, F), 0.25))
    _dl_dir(tmp_path / "tk", "AutoEncoderTopK", topk, k=3)
    assert isinstance(load(tmp_path / "tk"), TopKSAE) and load(tmp_path / "tk").params.k == 3


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    d = tmp_path / "evil"
    _dl_dir(d, "AutoEncoder", {})
    torch.save({"encoder.weight": _Payload(str(target))}, d / "ae.pt")
    with pytest.raises(HusaiError, match=r"ae\.pt: refusing to unpickle"):
        load(d)
    assert not target.exists()


def test_bad_input_is_one_line_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "weights.bin").write_bytes(b"x")
    cases: list[tuple[Path, str | None, str]] = [
        (tmp_path / "empty", None, "empty: empty directory"),
        (tmp_path / "odd", None, r"odd: unknown SAE layout \(found weights.bin"),
        (tmp_path / "nope", None, "not an SAE directory"),
        (tmp_path / "odd", "safetensors", "unknown SAE format 'safetensors'"),
    ]
    t = _sparsify_dir(tmp_path / "trunc")
    data = (tmp_path / "trunc" / "sae.safetensors").read_bytes()
    (tmp_path / "trunc" / "sae.safetensors").write_bytes(data[: len(data) // 2])
    cases.append((tmp_path / "trunc", None, r"trunc/sae.safetensors: not a valid safetensors"))
    _sparsify_dir(tmp_path / "shape")
    save_file({**t, "b_dec": torch.zeros(D + 1)}, str(tmp_path / "shape" / "sae.safetensors"))
    cases.append((tmp_path / "shape", None, r"sae.safetensors: b_dec has shape \(7,\), expected"))
    s = _dl_autoencoder_state()
    s["encoder.bias"][2] = float("nan")
    _dl_dir(tmp_path / "nan", "AutoEncoder", s)
    cases.append((tmp_path / "nan", None, r"nan/ae.pt: encoder.bias contains NaN"))
    _dl_dir(tmp_path / "cls", "CrossCoder", _dl_autoencoder_state())
    cases.append((tmp_path / "cls", None, "config.json: unsupported dict_class 'CrossCoder'"))
    _dl_dir(tmp_path / "torn", "AutoEncoder", _dl_autoencoder_state())
    blob = (tmp_path / "torn" / "ae.pt").read_bytes()
    (tmp_path / "torn" / "ae.pt").write_bytes(blob[: len(blob) // 3])
    cases.append((tmp_path / "torn", None, "torn/ae.pt: not a valid torch checkpoint"))
    _dl_dir(tmp_path / "miss", "AutoEncoder", {"bias": torch.zeros(D)})
    cases.append((tmp_path / "miss", None, "miss/ae.pt: missing tensor 'encoder.weight'"))
    _sparsify_dir(tmp_path / "gm", activation="groupmax")
    cases.append((tmp_path / "gm", None, "activation 'groupmax' is not supported"))
    _saelens_dir(tmp_path / "sl", "standard", normalize_activations="layer_norm")
    cases.append((tmp_path / "sl", None, "normalize_activations='layer_norm' is not supported"))
    _saelens_dir(tmp_path / "mp", "matching_pursuit")
    cases.append(
        (tmp_path / "mp", "saelens", "unsupported SAELens architecture 'matching_pursuit'")
    )
    for path, fmt, pattern in cases:
        with pytest.raises(HusaiError, match=pattern) as e:
            load(path, format=fmt)
        assert "\n" not in str(e.value), str(e.value)
    with pytest.raises(HusaiError, match="no SAE directories found"):
        find_saes(tmp_path / "odd")


def test_explicit_format_and_husai_alias(tmp_path: Path) -> None:
    _sparsify_dir(tmp_path / "sp")
    assert isinstance(load(tmp_path / "sp", format="sparsify"), TopKSAE)
    with pytest.raises(HusaiError, match="sae_weights.safetensors: file not found"):
        load(tmp_path / "sp", format="husai")


def test_cli_compare_mixes_formats_and_rejects_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from husai.cli import app
    from husai.config import SAEConfig
    from husai.sae import save, train_sae

    _sparsify_dir(tmp_path / "sparsify", seed=1)
    _dl_dir(tmp_path / "dl", "AutoEncoder", _dl_autoencoder_state(seed=2))
    sae, _ = train_sae(SAEConfig(d_sae=F, k=3, epochs=1), torch.randn(64, D), [3])
    save(sae, tmp_path / "husai")
    runner = CliRunner()
    dirs = [str(tmp_path / n) for n in ("sparsify", "dl", "husai")]
    res = runner.invoke(app, ["compare", *dirs, "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "c.json").read_text())
    assert len(out["pairs"]) == 3 and 0 < out["pwmcc"]["trained"]["mean"] <= 1
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "weights.bin").write_bytes(b"\0" * 8)
    trunc = tmp_path / "trunc"
    save(sae, trunc)
    w = trunc / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    for bad, needle in [("empty", "empty"), ("odd", "odd"), ("trunc", "sae_weights")]:
        res = runner.invoke(app, ["compare", dirs[2], str(tmp_path / bad)])
        assert res.exit_code == 2, (bad, res.output)
        assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
