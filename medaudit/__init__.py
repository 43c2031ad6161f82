"""medaudit: audit trained medical-image classifiers before release."""

import os

# Early stop shrinks the attacked batch step by step, and oneDNN keeps compiled kernels per input
# shape (1024 by default), so peak memory grew with the number of images (1.6 GB for 5,000 images
# at 28 px). 64 bounds it at no measured cost (benchmarks/RESULTS-scaling.md); a user's own
# setting wins. Read lazily by oneDNN, so this works even after torch is imported.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

__version__ = "0.1.0"
