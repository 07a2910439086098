"""husai: do sparse autoencoders learn the same features under another seed?"""

from husai.errors import HusaiError

__version__ = "0.1.0"
__all__ = ["HusaiError", "__version__"]
