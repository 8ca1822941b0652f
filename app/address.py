"""The view in the address: links that reopen a view.

Widgets that make a view (the model, the image indices, stages, channels, shift, ticked stages, the section shown)
are created with ``bind="query-params"``: Streamlit keeps each one's value in the page's address under its widget
key, and an address opened in a new browser sets them. The lens's clicked window is no widget: `keep_window` writes
it to the address (`window=ROW,COL`) and reads it back on a session's first run.

Streamlit drops an address value a widget cannot take (an image index past the dataset's end, a model that is gone)
without a word: `remember` keeps the address a session opened with, and `stale_note` says in one line which of its
values could not be shown. Uploads and drawings are not in the address (a link cannot carry a file).
"""
from __future__ import annotations

from typing import Callable

import streamlit as st

__all__ = ["BIND", "remember", "stale_note", "keep_window", "adopt", "WINDOW_PARAM"]

BIND = "query-params"  # the `bind` of every widget that is part of a view
REQUESTED = "address_requested"  # session key: the address this session opened with ({} once reported)
WINDOW_PARAM = "window"


def remember() -> None:
    """On a session's first run, keep the address it opened with (before any widget can change it)."""
    if REQUESTED not in st.session_state:
        st.session_state[REQUESTED] = {key: st.query_params.get(key) for key in st.query_params}


def adopt(key: str, parse: Callable[[str], object]) -> None:
    """Put a bound widget's value from the opening address into the session before the widget is drawn, once, so
    what a page draws above the widget from that value (a heading, an outlined tile) agrees on the first run.
    A value that does not parse is left to the widget (which drops it; `stale_note` reports it)."""
    requested = st.session_state.get(REQUESTED) or {}
    flag = f"{key}_adopted"
    if key not in requested or flag in st.session_state:
        return
    st.session_state[flag] = True
    try:
        st.session_state[key] = parse(str(requested[key]))
    except ValueError:
        pass


def stale_note(shown_as: dict[str, Callable[[object], str]]) -> str | None:
    """One line naming the values of the opening address that the view could not take, once per session; None when
    every value was taken. `shown_as` maps a widget key to how its value reads in the address."""
    requested = st.session_state.get(REQUESTED) or {}
    if not requested:
        return None
    missing = []
    for key, wanted in requested.items():
        if key == WINDOW_PARAM or key not in st.session_state:
            continue
        shown = shown_as.get(key, _plain)(st.session_state[key])
        if key not in st.query_params and wanted != shown:
            missing.append(f"{key}={wanted}")
    st.session_state[REQUESTED] = {}
    if not missing:
        return None
    return (f"This link asked for {', '.join(missing)}, which this app cannot show now (gone, or out of range); "
            "showing the nearest view instead.")


def _plain(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def keep_window(session_key: str, windows: tuple[int, int]) -> None:
    """The lens's clicked window (session key `session_key`) in the address: read once from an opening address
    (when it fits `windows`, the lens's (rows, cols)), then written after every run."""
    requested = st.session_state.get(REQUESTED) or {}
    asked = f"{session_key}_asked"
    if WINDOW_PARAM in requested and asked not in st.session_state:
        st.session_state[asked] = True
        try:
            row, col = (int(part) for part in str(requested[WINDOW_PARAM]).split(","))
        except ValueError:
            row, col = -1, -1
        if 0 <= row < windows[0] and 0 <= col < windows[1]:
            st.session_state[session_key] = (row, col)
    window = st.session_state.get(session_key)
    if window is None:
        st.query_params.pop(WINDOW_PARAM, None)
    else:
        st.query_params[WINDOW_PARAM] = f"{window[0]},{window[1]}"
