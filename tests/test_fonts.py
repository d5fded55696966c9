"""nbkit.views.fonts: a figure with Chinese text renders with a CJK font, without matplotlib's "Glyph ...
missing from font(s)" warning (the set-up installs fonts-noto-cjk: `make cjk-font`)."""
import io
import warnings

import matplotlib

from nbkit.views import fonts, plots  # noqa: F401 - importing the figures configures the fonts
from matplotlib.figure import Figure


def test_a_cjk_font_is_installed_and_configured():
    found = fonts.cjk_font()
    assert found, f"no CJK font among {fonts.CJK_FONTS}: `make cjk-font` installs Debian's fonts-noto-cjk"
    assert matplotlib.rcParams["font.family"] == [fonts.LATIN_FONT, found]


def test_a_chinese_figure_renders_without_a_missing_glyph():
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2, 3], [2.0, 1.2, 0.9], label="验证损失")
    ax.set_title("学习率 1e-3：每个轮次的验证损失")
    ax.set_xlabel("轮次")
    ax.set_ylabel("损失")
    ax.legend()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert missing == []


def test_without_the_cjk_font_the_same_figure_would_warn():
    """The check above can fail: with only the Latin font, matplotlib warns for each Chinese glyph."""
    before = matplotlib.rcParams["font.family"]
    matplotlib.rcParams["font.family"] = [fonts.LATIN_FONT]
    try:
        fig = Figure()
        fig.subplots().set_title("轮次")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.savefig(io.BytesIO(), format="png")
    finally:
        matplotlib.rcParams["font.family"] = before
    assert any("missing from font" in str(w.message) for w in caught)
