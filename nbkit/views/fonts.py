"""Figures that render Chinese: a CJK font after matplotlib's own, so Latin text and numbers keep DejaVu Sans
and a Chinese title or label falls back to the CJK font glyph by glyph (matplotlib >= 3.6 falls back along
font.family). The set-up installs Debian's fonts-noto-cjk (`make cjk-font`, part of `make lab` and `make test`).

    configure()        called when nbkit.views.plots is imported: every figure module imports it
    cjk_font()         the CJK family found on this machine, or None
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib import font_manager

LATIN_FONT = "DejaVu Sans"  # matplotlib's own default: every figure looked this way before the Chinese edition
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei")  # Simplified first
CJK_FILE_MARKS = ("NotoSansCJK", "NotoSansSC", "SourceHanSans", "wqy-microhei")  # their files' names


def cjk_font() -> str | None:
    """The first of CJK_FONTS installed here (matplotlib's font list), or None. A font installed after
    matplotlib made its font cache is not in that list: the system's font files are looked at then."""
    found = _first_listed()
    if found is None:
        for path in font_manager.findSystemFonts():
            if any(mark in Path(path).name for mark in CJK_FILE_MARKS):
                font_manager.fontManager.addfont(path)
        found = _first_listed()
    return found


def _first_listed() -> str | None:
    listed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in listed), None)


def configure() -> str | None:
    """Put the CJK font after DejaVu Sans in matplotlib's font.family; returns it (None: none installed, and
    a Chinese figure would show boxes: `make cjk-font` installs one)."""
    found = cjk_font()
    matplotlib.rcParams["font.family"] = [LATIN_FONT] + ([found] if found else [])
    return found
