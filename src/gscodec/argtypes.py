"""argparse ``type=`` converters shared by the ``gscodec`` subcommands."""

from __future__ import annotations

import argparse
import math

from .limits import MAX_SIDE


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def image_side(text: str) -> int:
    """An image width or height: an integer in 1..MAX_SIDE."""
    value = int(text)
    if not 1 <= value <= MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be an integer in 1..{MAX_SIDE}, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
