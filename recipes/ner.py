"""ner: named-entity recognition by generation (bundled data: disease mentions in short clinical sentences).

Supports
  - CoNLL/BIO files (`token<TAB>tag`, a blank line between sentences; `token tag` with spaces, and extra middle
    columns such as CoNLL-2003's POS and chunk, work too; `-DOCSTART-` lines are skipped), read as IOB2 and,
    leniently, IOB1; any suffix except .jsonl/.json (bundled: bundled:ner/{train,validation,test}.conll).
  - JSONL records with a text and character spans, `{"text": "...", "spans": [{"start": 0, "end": 6,
    "type": "Disease"}]}` (end exclusive; field names: recipe.data.text_field / recipe.data.label_field). The text
    is split into words and punctuation marks, and also at every span edge, so each span covers whole tokens.
  - Any set of entity types: recipe.entity_types, or null to take the types found in the training data.
  - Target format: one `Type: mention` line per entity, in sentence order, or the fixed answer `none`
    (recipe.none_answer). Why: a 135M model copies short spans from its prompt far more reliably than it learns
    to balance JSON brackets and quotes, and each line costs ~3 tokens beyond the mention (a JSON list of
    {"text", "type"} objects costs ~12), so training is cheaper and a truncated answer loses one line, not the
    whole parse. The type name on every line keeps one format for one type or twelve.
  - Prediction: greedy generation (ftkit.tasks.generation), then parsing. An answer parses when it is the none answer or
    every non-empty line is `<type>: <mention>` with a known type (case-insensitive; a leading bullet, number and
    quotes around the mention are tolerated). Anything else is unparseable: it counts as predicting no entities,
    and the number of such answers is reported. Parsed mentions are mapped onto the sentence's tokens by
    ftkit.tasks.bio.align_entities (whitespace-insensitive exact match, exact case first, first occurrence not yet
    taken by an earlier mention of the same answer); a mention found nowhere is dropped and counted.
  - Metrics (seqeval, on the original gold tags; predictions become IOB2 tags): entity-level exact-match micro
    precision / recall / F1 (primary: micro_f1), seqeval's macro F1, per type precision / recall / F1 / support /
    predicted count (metrics "per_class"), and the counts unparseable, unparseable_rate, unaligned_entities.

Raises FtkitError (exit 2) for
  - a prompt_template without {text}, a system_prompt with placeholders other than {types}, an entity type that
    is empty, repeated or contains ':' or a line break, an empty none_answer, or an unknown recipe.data.format;
  - a data file that does not exist, is not UTF-8 or holds no sentences;
  - a CoNLL line with a token but no tag, a tag that is not O / B-<type> / I-<type>, or a B- or I- tag whose type
    is not in recipe.entity_types (or, when those are inferred, not in the training data) (file:line given);
  - training data without any entity when recipe.entity_types is null;
  - a JSONL record missing its text or spans field, or a span that is malformed, outside the text, covers only
    whitespace, overlaps another span or has a type outside recipe.entity_types (file:line given).
"""

from __future__ import annotations

from ftkit.tasks.ner import NerRecipeConfig, NerTask


class NerRecipe(NerTask):
    """Disease mentions in clinical sentences by default (conf/recipe/ner.yaml); any entity types work."""


SCHEMA = NerRecipeConfig
RECIPE = NerRecipe
