"""The compiled text kernels of prefpred.features (C, built by pip with the Python headers).

Everything else is in pyproject.toml. The extension is optional: when it cannot be compiled (no C
compiler) or ``PREFPRED_NO_KERNELS=1`` is set (``prefpred bundle`` builds a pure wheel that way,
for any Python), prefpred computes the same features with polars alone.
"""

import os

from setuptools import Extension, setup

kernels = Extension("prefpred.features._kernels", ["prefpred/features/_kernels.c"],
                    extra_compile_args=["-O3", "-std=c11"], optional=True)
setup(ext_modules=[] if os.environ.get("PREFPRED_NO_KERNELS") == "1" else [kernels])
