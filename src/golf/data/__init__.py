"""The data contract: conformations, their labels and statuses, and the files that hold them.

The bottom layer: it imports nothing of golf's but :mod:`golf.units`.

- :mod:`golf.data.dataset`: the HDF5 dataset (TorchANI-readable), statuses, energy conventions;
  the only module that opens a golf HDF5 file.
- :mod:`golf.data.formats`: foreign files in (ASE db, extxyz, SDF, XYZ) and out (SDF, XYZ,
  TorchANI export).
"""

from golf.data.dataset import *  # noqa: F403 (the package's API is dataset's)
from golf.data.dataset import __all__ as __all__
