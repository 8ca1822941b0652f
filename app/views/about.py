"""About: what the tool is, a five-step tour of the paper's idea for a class, what each page shows and how to read
it, and the glossary (app.glossary), each term under its own anchor so a page can link to it (`about#tie`)."""
import streamlit as st

from app.glossary import GLOSSARY, anchor, term_link

READING_WIDTH = 900  # px

TOUR = [  # (page, label, what to look at there)
    ("views/layers.py", "1 · Layers: what and where",
     f"One digit goes up the encoder: at each stage the {term_link('what')} maps get smaller, and the "
     f"{term_link('where')} map beside them says which cell of each {term_link('pooling window')} won."),
    ("views/layers.py", "2 · The pooling lens (on Layers, below the stages)",
     f"Click any map in the what mosaic: the lens draws that channel large, every window outlined, its "
     f"{term_link('switch')} marked in red and each {term_link('tie')} under a grey veil. Hover a window to read its values."),
    ("views/swap.py", "3 · Swap: A's what with B's where",
     "Decode image A's what with image B's where: the result takes B's positions with A's content, and the table "
     "says which of the two it is closer to, stage by stage."),
    ("views/compare.py", "4 · Compare: a model trained without wheres",
     f"Model B opens on a model that differs from A in one thing wherever one ships; for the shipped digits model, "
     f"the where ablation, whose decoder never used wheres ({term_link('unpooling')} by copying). Compare the two "
     f"reconstructions' errors, then the shift probe's {term_link('invariance')} and {term_link('equivariance')} per "
     "stage."),
    ("views/runs.py", "5 · Runs: watch the switches form",
     f"Pick a run (or start one on Train: the tiny model on mnist5k takes minutes): the curves show "
     f"{term_link('L2rec')}, {term_link('L2M')} and accuracy over the steps, and the snapshots show the where maps "
     "settling as it trains."),
]

PAGES = [  # (page, title, what it shows and how to read it); icons as in the sidebar (app/main.py)
    ("views/layers.py", "Layers", ":material/layers:",
     "One image (from the examples, an upload or a drawing): its reconstruction and the difference, the prediction, "
     "and a tab per stage with the what maps (one tile per channel, bright = large) beside the where map. Below: "
     f"the pooling lens of one channel, that {term_link('unit')} decoded alone with the examples it responds to "
     f"most, and each stage's {term_link('pre-pool')} maps and decoder hidden state ({term_link('L2M')})."),
    ("views/swap.py", "Swap", ":material/swap_horiz:",
     "Two images, A and B. Tick the stages whose where comes from B: the decoder builds A's what with B's where "
     "(and the reverse). The errors against A and against B say which image the result resembles. The where morph "
     "moves the wheres from A's to B's gradually; the swap matrix pairs every image's what with every image's "
     f"where; the shift probe measures {term_link('invariance')} ({term_link('what ÷ pre-pool')}) and "
     f"{term_link('equivariance')} (switches followed against chance, over {term_link('switches counted')})."),
    ("views/compare.py", "Compare", ":material/compare:",
     "The sidebar's model (A) beside any other checkpoint or a run's snapshot (B), on the same input: their stages, "
     "reconstructions, predictions and shift probes side by side, and, for two models of the same shape, A's what "
     "decoded with B's where. A sentence at the top says what the two models differ in."),
    ("views/attribution.py", "Attribution", ":material/insights:",
     "Which input pixels push the chosen class up (red) or down (blue), by four methods. Deconvolution routes the "
     f"signal back through the {term_link('switch', 'switches')}, like the SWWAE decoder, and sits beside the "
     "decoding of the image's strongest top-stage unit. A line says when a method's map hardly depends on the class."),
    ("views/train.py", "Train", ":material/model_training:",
     "Start a training run as its own process (closing the tab does not stop it), with an estimate of its time on "
     "this machine; stop or resume any run."),
    ("views/runs.py", "Runs", ":material/monitoring:",
     "Every run in the runs folder: loss and accuracy curves while it trains, sample reconstructions, and the "
     "where maps and pooling lens at each snapshot, to watch the switches form."),
]

SHARING = ("**Sharing and saving.** An explorer page's address holds its view (the model, the dataset images, the "
           "stage, the channel): send it, and it opens the same view. Uploads and drawings are not in it (a link cannot "
           "carry a file). Buttons beside the figures and tables download them.")
COLOURS = ("**Images and maps** are drawn in grey (black = 0). **Sequential scales** (dark to bright) show "
           "magnitudes such as what values. **Diverging scales**, blue through white to red and centred on 0, show "
           "signed values: differences between pictures and attributions. **Where maps** colour each value by the "
           f"cell of its window it came from (the key is under each one); grey means a {term_link('tie')}, and colours "
           "fade where the what is small. Every figure sits on a white card, in the light and the dark theme alike.")

with st.container(width=READING_WIDTH):  # lines a person can read, not the wide layout's full width
    st.title("About SWWAE Explorer")
    st.markdown(
        "A stacked **what-where autoencoder** (Zhao, Mathieu, Goroshin & LeCun, 2015, "
        "[arXiv:1506.02351](https://arxiv.org/abs/1506.02351)) is a convolutional network that classifies an image and "
        f"also rebuilds it. Each pooling step keeps two things: **what** was found (the largest value of each "
        f"{term_link('pooling window')}) and **where** it was (its {term_link('switch')}). The classifier reads only the "
        "whats; the decoder needs the wheres to put the content back in place. This tool opens trained models so you "
        "can see both halves, swap them between images, and train your own.")
    st.caption("Pick a model in the sidebar; every page works on it. Words in links are explained in the glossary below.")

    st.header("A tour in five steps", anchor="tour")
    for page, label, sentence in TOUR:
        with st.container(border=True):
            st.page_link(page, label=label, icon=":material/arrow_forward:")
            st.markdown(sentence)

    st.header("The pages", anchor="pages")
    for page, title, icon, text in PAGES:
        st.page_link(page, label=title, icon=icon)
        st.markdown(text)
    st.markdown(SHARING)
    st.subheader("Reading the pictures", anchor="colours")
    st.markdown(COLOURS)

    st.header("Glossary", anchor="glossary")
    for term, meaning in GLOSSARY.items():
        st.subheader(term, anchor=anchor(term))
        st.markdown(meaning)
