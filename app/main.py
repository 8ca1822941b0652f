"""SWWAE Explorer: `streamlit run app/main.py`. Page config, the shared sidebar, and the page list."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

import app.preload  # noqa: E402, F401 - first: what Streamlit and Plotly import lazily, whole before any session uses it
import os  # noqa: E402

import streamlit as st  # noqa: E402
import torch  # noqa: E402

from app import address, sidebar  # noqa: E402

# The explorer runs batches of 1 to 64 small images: one intra-op thread is fastest for that and never
# oversubscribes a CPU shared with training runs (two threads on two busy cores were 10x slower).
torch.set_num_threads(int(os.environ.get("SWWAE_APP_THREADS", "1")))

st.set_page_config(page_title="SWWAE Explorer", page_icon=":material/grid_view:", layout="wide",
                   menu_items={"About": "**SWWAE Explorer**: what and where in a stacked what-where autoencoder. "
                               "The About page (last in the sidebar) explains every page and term."})

PAGES = [
    st.Page("views/layers.py", title="Layers", icon=":material/layers:", default=True),
    st.Page("views/swap.py", title="Swap", icon=":material/swap_horiz:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/attribution.py", title="Attribution", icon=":material/insights:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:"),
    st.Page("views/about.py", title="About", icon=":material/help:"),
]
page = st.navigation(PAGES)
address.remember()  # the address this session opened with, before any widget changes it
sidebar.render()
note = st.empty()  # a one-line note at the top of the page when the opening address named something gone
page.run()
stale = address.stale_note({sidebar.MODEL_CHOICE: sidebar.source_label})
if stale:
    note.warning(stale, icon=":material/link_off:")
