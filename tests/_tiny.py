"""The tiny end-to-end config, shared by the fixtures and the reliability fuzzers."""

TINY = {
    "toy": {
        "model": {"p": 23, "d_model": 32, "n_heads": 2, "d_mlp": 64},
        "train": {"train_frac": 0.7, "max_steps": 60, "check_every": 30},
    },
    "saes": [
        {"architecture": "topk", "d_sae": 48, "k": 4, "epochs": 4, "batch_size": 64},
        {"architecture": "relu", "d_sae": 48, "epochs": 4, "batch_size": 64},
    ],
    "seeds": [1, 2, 3],
    "metrics": {"n_bootstrap": 200, "functional_latents": 16, "functional_probes": 32},
}
