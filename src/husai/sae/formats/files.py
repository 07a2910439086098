"""File names of every on-disk SAE layout husai reads (one place)."""

CFG_FILE = "cfg.json"  # SAELens / husai and sparsify
WEIGHTS_FILE = "sae_weights.safetensors"  # SAELens / husai
OWN_WEIGHTS_FILE = "husai_weights.safetensors"  # husai: SAE.own_tensors (e.g. archetypal's)
SPARSIFY_WEIGHTS_FILE = "sae.safetensors"
DL_CONFIG_FILE = "config.json"  # dictionary_learning (also a sparsify run's TrainConfig)
DL_WEIGHTS_FILE = "ae.pt"

#: format name → the files whose presence identifies it
LAYOUTS: dict[str, tuple[str, ...]] = {
    "saelens": (CFG_FILE, WEIGHTS_FILE),
    "sparsify": (CFG_FILE, SPARSIFY_WEIGHTS_FILE),
    "dictionary_learning": (DL_CONFIG_FILE, DL_WEIGHTS_FILE),
}
