"""The SAE architectures, one module each: its hyperparameters (a small pydantic model,
`Params`), its traits as class data and its `@register`ed SAE class on `husai.sae.base.SAE`.

`husai.sae.registry` imports every module of this package, so a new architecture is one new
file here (and a test); nothing else lists the architectures.
"""
