"""verify_dropblock(): placeholder, being written (issue 31)."""

from __future__ import annotations


def verify_dropblock(fn, *args, **kwargs):
    raise NotImplementedError("verify_dropblock is being written")
