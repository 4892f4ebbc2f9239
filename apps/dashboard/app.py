"""The workbench dashboard (`workbench app`): six pages over the library, one sidebar for all.

Started as `streamlit run apps/dashboard/app.py -- --runs DIR`. This entry point draws the
sidebar (runs folder, active world) so that its values persist across pages, keeps every
page's form as it was left, then runs the chosen page; every page also runs on its own
(Streamlit's AppTest drives them one by one).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps.dashboard import common

VIEWS = Path(__file__).parent / "views"
# file, title, icon, and the prefix of its widgets' keys
PAGES = [
    ("model_facts.py", "Model & facts", ":material/psychology:", "mf."),
    ("unlearn.py", "Unlearn", ":material/content_cut:", "ul."),
    ("audit.py", "Audit", ":material/fact_check:", "au."),
    ("internals.py", "Internals", ":material/hub:", "in."),
    ("sae.py", "SAE features", ":material/scatter_plot:", "sae."),
    ("runs.py", "Runs", ":material/folder_open:", "rn."),
]

st.set_page_config(page_title="Unlearning workbench", layout="wide")
page = st.navigation([st.Page(VIEWS / f, title=t, icon=i, default=f == PAGES[0][0])
                      for f, t, i, _ in PAGES])
common.keep_widget_values(next(p for _, t, _, p in PAGES if t == page.title))
ctx = common.sidebar()
with common.using(ctx):
    page.run()
