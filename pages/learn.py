"""Learn: a guided walk through the ideas of a VAE, each step live on the real model and catalog.

Steps (the ``step`` URL key): encoding, the reparameterisation trick, "which item is nearest to my z?",
KL between Gaussians, the KL term in training, uncertainty on the map, and interpolation. Each step is a
function of :mod:`ui.learn_steps`; the maths lives in :mod:`latent.teaching`, :mod:`latent.uncertainty` and
:mod:`latent.interpolation`, the figures in :mod:`ui.figures.learn`. Every choice on the page is in the URL,
so each view can be shared by its link.
"""

import streamlit as st

from latent.model import decode_images
from latent.render import png_bytes
from ui import learn_steps as steps
from ui import state
from ui.page import start_page

res, index, presenting = start_page()
q = state.query()
step = state.extra("step")

# ----------------------------------------------------------------------------- navigation
if not presenting:
    with st.sidebar:
        steps.bind(steps.W_STEP, step)
        st.radio("The walk", state.LEARN_STEPS, key=steps.W_STEP, on_change=state.extra_from_widget,
                 args=("step", steps.W_STEP),
                 format_func=lambda s: f"{state.LEARN_STEPS.index(s) + 1}. {steps.TITLES[s]}")
        st.divider()
        st.image(png_bytes(decode_images(res.model, q.z_array), scale=4), width=112, output_format="PNG",
                 caption="The query z" + (f" = μ of item #{q.item}" if q.item is not None else ""))
        st.page_link("pages/explore.py", label="Set z on Explore", icon=":material/tune:")

number = state.LEARN_STEPS.index(step) + 1
st.title("Learn: inside the VAE" if not presenting else steps.TITLES[step])
if not presenting:
    st.subheader(f"{number}. {steps.TITLES[step]}")

steps.STEPS[step](steps.walk(res, index, presenting))

# ----------------------------------------------------------------------------- previous / next
st.divider()
p, mid, n = st.columns([1, 3, 1], vertical_alignment="center")
if number > 1:
    p.button(f"← {steps.TITLES[state.LEARN_STEPS[number - 2]]}", key="btn_learn_prev", width="stretch",
             on_click=state.set_extra, args=("step", state.LEARN_STEPS[number - 2]))
mid.markdown(f"<p style='text-align:center'>Step {number} of {len(state.LEARN_STEPS)}</p>",
             unsafe_allow_html=True)
if number < len(state.LEARN_STEPS):
    n.button(f"{steps.TITLES[state.LEARN_STEPS[number]]} →", key="btn_learn_next", width="stretch", type="primary",
             on_click=state.set_extra, args=("step", state.LEARN_STEPS[number]))
state.sync_url()
