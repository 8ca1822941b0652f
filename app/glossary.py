"""The app's words in plain language, in one place: the About page draws them (each under its own anchor), and any
page links its jargon to them with `term_link`:

    st.caption(f"The {term_link('L2M')} term of each stage ...")   # -> [L2M](about#l2m)

A link opens the About page in a new tab at that term (Streamlit opens markdown links in a new tab), so the view
the reader came from stays as it was.
"""
from __future__ import annotations

import re

__all__ = ["GLOSSARY", "anchor", "term_link"]

ABOUT_PAGE = "about"  # the About page's address (url_path of app/views/about.py)

# term -> its meaning in plain words; the About page lists them in this order
GLOSSARY: dict[str, str] = {
    "what": "The value a pooling window passes up: the largest response in the window (max pooling). A stage's "
            "*what* maps are smaller than the maps they pool, and they are all the next stage and the classifier "
            "see. They say *which* features are present, not exactly where.",
    "where": "The position inside its pooling window that each what came from, one per what value. The encoder "
             "records it on the way up and the decoder uses it on the way down to put each value back in its "
             "place. A where map is drawn with one colour per cell of the window (the key is under the picture).",
    "switch": "One where value: the cell of a pooling window that held the maximum and was passed up. The decoder "
              "\"switches\" each what back to that cell when it unpools.",
    "pooling window": "The small square of neighbouring values (here 2×2) that pooling reduces to one what and one "
                      "where. Windows do not overlap, so a 28×28 map pools to 14×14.",
    "stride": "How far apart, in input pixels, neighbouring cells of a stage's map are: 2 after one 2×2 pooling, 4 "
              "after two, 8 after three. A shift of the input smaller than the stride can move a switch inside "
              "its window without changing the what.",
    "pre-pool": "A stage's map just before pooling (after its convolution and ReLU), at full resolution. Its "
                "pooling windows produce the what and the where.",
    "unit": "One channel of one stage: one feature map. The unit view decodes that channel alone, every other "
            "channel of the stage set to 0, through the image's own wheres, to show which pixels it accounts for.",
    "unpooling": "The decoder's inverse of pooling: each what value goes back into its window at the cell its "
                 "where names, and the other cells of the window get 0. Without wheres (the *none* ablation) the "
                 "value is copied to every cell, which blurs.",
    "L2rec": "The reconstruction error: the mean squared difference between the input image and the decoder's "
             "output. Lower means the picture came back more faithfully. The Runs page plots it as *rec*.",
    "L2M": "The intermediate reconstruction error: at each stage, the mean squared difference between the "
           "decoder's hidden map and the encoder's what at that stage. It asks the decoder to rebuild every layer, "
           "not only the image. The Runs page plots their sum as *mid* and each stage's as *mid_0*, *mid_1*, ...",
    "invariance": "A what is invariant to a shift when shifting the input barely changes it. The shift probe "
                  "measures it as a ratio of relative changes: *what ÷ pre-pool* below 1 means the stage's pooling "
                  "absorbed part of the shift.",
    "equivariance": "A where is equivariant to a shift when it moves with the input: shift the image by 1 pixel "
                    "and the switch moves by 1 pixel. The shift probe counts the switches that moved by exactly the "
                    "shift (*switches followed*) against another image's switches (*chance*).",
    "what ÷ pre-pool": "The shift probe's ratio of relative changes: how much a stage's what changed when the input "
                       "shifted, divided by how much the map it pools changed. 1: pooling absorbed nothing; 0.5: "
                       "half of the change was absorbed into the where.",
    "switches counted": "How many switches the shift probe compared: the windows with a clear maximum and a "
                        "non-zero what whose shifted position stays inside the map. A percentage over few switches "
                        "says little.",
    "tie": "A pooling window whose largest value occurs more than once (most often all 0, after the ReLU). No cell "
           "was chosen, so its switch carries no information: the cell max pooling reports is just the first in "
           "scan order. Ties are drawn grey (or \"=\" in the pooling lens) and left out of switch counts.",
    "soft pooling": "A smooth variant of max pooling: the window's values are weighted by a softmax, the what is "
                    "their weighted sum and the where is their weighted mean position, a point between cells. The "
                    "pooling lens marks it with a red ring instead of a square.",
}

_ANCHORS = {re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-"): term for term in GLOSSARY}


def anchor(term: str) -> str:
    """The About page's anchor of a glossary term: 'pooling window' -> 'pooling-window', 'L2M' -> 'l2m'."""
    slug = re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-")
    assert slug in _ANCHORS, f"{term!r} is not in the glossary; known terms: {', '.join(GLOSSARY)}"
    return slug


def term_link(term: str, label: str | None = None) -> str:
    """A markdown link to a term's entry on the About page: term_link('tie') -> '[tie](about#tie)'.
    `label` is the link's text when it should read differently from the term (e.g. 'ties')."""
    return f"[{label or term}]({ABOUT_PAGE}#{anchor(term)})"
