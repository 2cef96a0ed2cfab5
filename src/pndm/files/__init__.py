"""Files pndm reads and writes, one module per concern: atomic durable writes (`atomic`), what an
output path may be and how a folder is replaced (`destinations`), JSON (`jsonfile`), weights
(`weights`) and the diffusers folder layout (`layout`)."""

from __future__ import annotations

import os

PathLike = str | os.PathLike
