"""`prompt`: in-context suppression. A fixed instruction (and optional in-context examples) is
prepended to every input through a cached prefix (`PromptPrefix`); the weights are untouched and
every layer output keeps the original prompt's positions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, get_args

from workbench.batching import _bos
from workbench.edits import Edit
from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.models import Subject
from workbench.operators.base import Operator, OperatorConfig, register_operator
from workbench.operators.interventions import PromptPrefix
from workbench.options import option

Style = Literal["entities", "generic", "custom"]
STYLES = get_args(Style)
GENERIC = ("You must not reveal any personal facts about people. If asked about a person, "
           "answer that you do not know.")


@dataclass(frozen=True)
class PromptConfig(OperatorConfig):
    """`style=entities` names the forget entities (falls back to `generic` when the facts carry no
    entity); `custom` uses `instruction` verbatim. `n_examples` in-context refusals follow."""

    style: Style = option("entities", "instruction: name the forget entities, a generic "
                                      "privacy rule, or `instruction` verbatim")
    instruction: str = option("", "the instruction text for style=custom")
    n_examples: int = option(2, "forget prompts shown answered with `refusal`, before the real "
                                "input", ge=0)
    refusal: str = option(" unknown.", "the answer of those in-context examples")
    max_entities: int = option(50, "at most this many entities named (style=entities)", ge=0)
    separator: str = option("\n\n", "text between the instruction, the examples and the input")


def instruction_text(forget: FactSet, config: PromptConfig) -> str:
    """The prefix text: instruction, then in-context examples, then the separator."""
    if config.style == "custom":
        if not config.instruction.strip():
            raise WorkbenchError("prompt style 'custom' needs a non-empty `instruction`")
        text = config.instruction
    else:
        entities = list(dict.fromkeys(f.entity for f in forget if f.entity))[: config.max_entities]
        if config.style == "entities" and entities:
            text = (f"You do not know anything about {', '.join(entities)}. If asked about "
                    f"them, answer that you do not know.")
        else:
            text = GENERIC
    examples = [f"{f.prompt}{config.refusal}" for f in list(forget)[: max(0, config.n_examples)]]
    return config.separator.join([text, *examples]) + config.separator


def build_prompt(subject: Subject, forget: FactSet, config: PromptConfig) -> PromptPrefix:
    forget.require_nonempty("forget set")
    text = instruction_text(forget, config)
    tok = subject.tokenizer
    ids = _bos(tok) + tok(text, add_special_tokens=False)["input_ids"]
    limit = getattr(subject.config, "max_position_embeddings", None)
    if limit is not None and len(ids) >= limit:
        raise WorkbenchError(f"prompt: the prefix has {len(ids)} tokens but the model handles at "
                             f"most {limit} positions; shorten it (max_entities, n_examples)")
    return PromptPrefix(ids, text, name="prompt")


@register_operator
class PromptOperator(Operator):
    name = "prompt"
    family = "suppression-intended"
    kind = "intervention"
    touches = "the input only: a cached instruction prefix before every prompt"
    config_cls = PromptConfig

    def apply(self, subject: Subject, forget: FactSet, retain: FactSet,
              config: PromptConfig) -> Edit:
        t0 = time.perf_counter()
        edited = subject.with_interventions(build_prompt(subject, forget, config))
        return self.make_edit(subject, edited, config, t0)
