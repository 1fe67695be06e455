"""The main job (`make demo`): the built-in demo corpus through the whole pipeline, every approach, one report.

    crescend-jax demo --config configs/demo.py --workdir runs/demo

The shared sections (corpus, data, render, encoder, store) describe the corpus and its store; each entry of
``approaches`` holds the model/train/eval/experiment sections of one approach's own config file, so an approach
trains here exactly as it does on PercePiano. Override any field, e.g. ``--config.data.num_pieces=40`` or
``--config.approaches.approach_a.train.num_steps=400``.
"""

import ml_collections

from crescend_jax.config import config_beside
from crescend_jax.data.demo_corpus import default_demo_data_config
from crescend_jax.data.render import default_render_config
from crescend_jax.data.store import default_store_config
from crescend_jax.encoders import default_encoder_config

APPROACH_CONFIGS = {"baseline": "baseline.py", "approach_a": "approach_a.py", "approach_b": "approach_b.py",
                    "approach_c": "approach_c.py"}
APPROACH_SECTIONS = ("model", "train", "eval", "experiment")


def _approach_sections(file_name: str) -> ml_collections.ConfigDict:
    full = config_beside(__file__, file_name)
    return ml_collections.ConfigDict({name: full[name] for name in APPROACH_SECTIONS})


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.corpus = "demo"
    config.data = default_demo_data_config()
    config.render = default_render_config()
    config.render.soundfonts = ("fluidr3", "musescore")  # two piano timbres: each performance is heard twice
    config.encoder = default_encoder_config()
    config.store = default_store_config()
    config.data.num_folds = 4  # 4 folds of whole compositions (36 leave-one-out folds would train 36 models each)
    config.approaches = ml_collections.ConfigDict({name: _approach_sections(f) for name, f in APPROACH_CONFIGS.items()})
    config.baseline = "baseline"  # trained first; every other approach's report compares against it
    return config
