"""Files pndm reads and writes, one module per concern: atomic durable writes (`atomic`), what an
output path may be and how a folder is replaced (`destinations`), the diffusers folder layout
(`layout`), and one bounded reader per kind of file: the regular-file check every read starts
with (`reading`), JSON (`jsonfile`), PNG chunk streams (`png`) and images (`imagefile`), ``.npz``
archives (`npz`), safetensors and torch pickles (`tensorfile`), model weights (`weights`)."""

from __future__ import annotations

import os

PathLike = str | os.PathLike
