"""The BiLSTM part-of-speech tagger: model, presets and registration."""

from zoo import registry
from zoo.tagger.model import CharCNN, build_tagger
from zoo.tagger.presets import PRESETS

SPEC = registry.register(
    registry.ModelSpec(
        name="tagger",
        task="tagging",
        description="BiLSTM part-of-speech tagger with word embeddings and a character CNN (UPOS)",
        builder=build_tagger,
        presets=PRESETS,
        default_preset="default",
        dataset="Universal Dependencies CoNLL-U (../shared/data/ud_english_ewt), or TFDS "
        "universal_dependencies/en_ewt",
        recipe="training.recipes.tagger",
        paper="Plank et al., ACL 2016 (BiLSTM tagger); Ma & Hovy, ACL 2016 (character CNN)",
    )
)

__all__ = ["SPEC", "PRESETS", "CharCNN", "build_tagger"]
