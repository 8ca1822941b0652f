"""The libraries the pages use that Streamlit, Plotly and Captum import lazily, imported in full once, before any page
runs: app/main.py imports this module first.

Streamlit runs each browser session's script in a thread of its own. A library first imported inside one session's
thread is half made for a moment, and code that looks it up in `sys.modules` instead of importing it (Plotly's and
Narwhals' optional-dependency checks do, for pandas) gets the half-made module in another session:
`AttributeError: partially initialized module 'pandas' has no attribute 'Series'` from `st.plotly_chart` on a freshly
started server opened by several sessions at once. Python's import lock makes every other session's thread wait at
`import app.preload` until the first has finished it, so no page runs before these are whole.
"""
from captum import attr  # noqa: F401 - also brings matplotlib
import matplotlib  # noqa: F401
import narwhals  # noqa: F401 - Plotly checks its inputs with it
import numpy  # noqa: F401
import pandas  # noqa: F401
import pandas.io.formats.style  # noqa: F401 - tables drawn with a Styler (app.figures); brings jinja2
import plotly.graph_objects  # noqa: F401
import plotly.io  # noqa: F401
import pyarrow  # noqa: F401
import pyarrow.pandas_compat  # noqa: F401 - st.table / st.dataframe of a pandas frame
from PIL import Image

Image.init()  # every image format's plugin registered now, not during some session's first upload
# Two paths that import more on their first use, taken once here: a column of text (pandas' Arrow strings) and an
# array handed to a Plotly trace (Narwhals' dataframe check).
pandas.DataFrame({"column": ["text"]})
plotly.graph_objects.Heatmap(z=numpy.zeros((1, 1)))
