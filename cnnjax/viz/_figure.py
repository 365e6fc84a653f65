"""A headless matplotlib (Agg) and one way to save figures.

Text that DejaVu Sans cannot draw (CJK class names, ...) falls back, glyph by glyph, to the
installed fonts of `FALLBACK_FONTS`, in order. Where none has a character, it is drawn as a box,
and one note line says which characters (once each; instead of matplotlib's two-line warning for
every glyph of every figure)."""

import io
import os
import sys
import warnings

import matplotlib

matplotlib.use("Agg")  # No display anywhere we run: laptops over ssh, CI, TPU VMs.
import matplotlib.pyplot as plt  # noqa: E402

from cnnjax import files  # noqa: E402

# Wide-coverage fonts of the usual platforms, tried in this order after the default family.
FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Arial Unicode MS",
    "PingFang SC",
    "Hiragino Sans",
    "Microsoft YaHei",
    "Malgun Gothic",
)
_MISSING_GLYPH = r"Glyph \d+ .* missing from font"
_reported: set[str] = set()  # Characters a note already named, in this process.


def _use_fallback_fonts() -> None:
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    extra = [name for name in FALLBACK_FONTS if name in installed]
    if extra:
        families = list(matplotlib.rcParams["font.family"])
        matplotlib.rcParams["font.family"] = [*families, *(n for n in extra if n not in families)]


_use_fallback_fonts()
# Layout passes before the save (tight_layout) draw the same text again: said once, at the save.
warnings.filterwarnings("ignore", message=_MISSING_GLYPH, category=UserWarning)


def new_figure(*args, **kwargs):
    return plt.subplots(*args, **kwargs)


def _note_missing_glyphs(caught) -> None:
    """One line naming the characters no installed font could draw (once per character), and
    every other warning shown as it would have been."""
    missing = []
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, UserWarning) and " missing from font" in text:
            char = chr(int(text.split()[1]))
            if char not in _reported and char not in missing:
                missing.append(char)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if missing:
        _reported.update(missing)
        line = (
            f"note: no installed font has {' '.join(missing)}: the plots draw a box in its "
            "place (installing a font that has it, e.g. Noto Sans CJK, fixes that)."
        )
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"  # An ASCII locale: \uXXXX.
        print(line.encode(encoding, "backslashreplace").decode(encoding), flush=True)


def save(fig, path: str | None, *, crop: bool = True) -> None:
    """Writes `fig` to `path` (PNG, 150 dpi) if a path is given, then releases it.

    crop: trim the margins to what is drawn, at the cost of drawing the figure twice (a third
    of the save's time). Figures whose `tight_layout` already fits them pass False."""
    if path:
        files.makedirs(os.path.dirname(files.absolute(path)))
        image = io.BytesIO()
        kind = os.path.splitext(path)[1].lstrip(".").lower() or "png"
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", message=_MISSING_GLYPH, category=UserWarning)
            fig.savefig(image, format=kind, dpi=150, bbox_inches="tight" if crop else None)
        _note_missing_glyphs(caught)
        # Whole or not at all: a kill (SIGTERM in --mode=visualize) or a full disk mid-write
        # leaves the previous picture, never half a file.
        files.write_atomic(path, image.getvalue(), durable=False)
    plt.close(fig)
