"""Build `workbench/data/smollm2_facts.jsonl`: keep only the candidate facts the bundled model
answers correctly under greedy decoding, then split each relation into forget/retain/holdout.

Usage: python scripts/curate_facts.py [--out PATH] [--per-relation N] [--report]

How the set was made: each relation has one plain completion template for the prompt and a few
differently worded paraphrase templates (works, founders and people have per-item prompts). Every
candidate prompt is scored with `workbench.behavior.evaluate`; a candidate is kept only when its
greedy continuation matches the answer (normalised prefix match) *and* the teacher-forced answer
tokens are each the model's argmax, and its answer is not copied from the prompt. The survivors'
paraphrases are then scored; they are ordered correct-first and at most two are kept
(always at least one). Each relation is capped at `--per-relation` facts and dealt round-robin
into forget / retain / holdout (each relation starting one split later), so every relation appears in every split in near-equal thirds.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.behavior import evaluate, is_match, normalize
from workbench.facts import Fact, FactSet
from workbench.models import load_subject

OUT = Path(__file__).resolve().parent.parent / "workbench" / "data" / "smollm2_facts.jsonl"
SPLIT_ORDER = ("forget", "retain", "holdout")


@dataclass(frozen=True)
class Relation:
    """A relation: prompt template, paraphrase templates and (entity, answer) pairs."""

    name: str
    id_prefix: str
    template: str
    paraphrases: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]


RELATIONS = (
    Relation("capital", "capital", "The capital of {e} is",
             ("The capital city of {e} is", "{e}'s capital is", "The capital of {e} is the city of"),
             (("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
              ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"),
              ("England", "London"), ("Egypt", "Cairo"), ("Greece", "Athens"),
              ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
              ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
              ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Hungary", "Budapest"),
              ("Thailand", "Bangkok"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
              ("Argentina", "Buenos Aires"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
              ("India", "New Delhi"), ("South Korea", "Seoul"), ("Turkey", "Ankara"),
              ("Iran", "Tehran"), ("Cuba", "Havana"), ("Belgium", "Brussels"),
              ("the Netherlands", "Amsterdam"), ("Switzerland", "Bern"),
              ("Czech Republic", "Prague"), ("Vietnam", "Hanoi"), ("Chile", "Santiago"),
              ("Colombia", "Bogota"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
              ("Nigeria", "Abuja"), ("Ukraine", "Kyiv"), ("Iraq", "Baghdad"),
              ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Scotland", "Edinburgh"),
              ("Wales", "Cardiff"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"),
              ("Serbia", "Belgrade"), ("Saudi Arabia", "Riyadh"))),
    Relation("language", "language", "The official language of {e} is",
             ("The main language spoken in {e} is", "Most people in {e} speak",
              "The national language of {e} is"),
             (("France", "French"), ("Germany", "German"), ("Italy", "Italian"),
              ("Spain", "Spanish"), ("Japan", "Japanese"), ("China", "Chinese"),
              ("Russia", "Russian"), ("Brazil", "Portuguese"), ("Portugal", "Portuguese"),
              ("Mexico", "Spanish"), ("Greece", "Greek"), ("Turkey", "Turkish"),
              ("Poland", "Polish"), ("Sweden", "Swedish"), ("Norway", "Norwegian"),
              ("Finland", "Finnish"), ("Denmark", "Danish"), ("the Netherlands", "Dutch"),
              ("Korea", "Korean"), ("Vietnam", "Vietnamese"), ("Thailand", "Thai"),
              ("Iran", "Persian"), ("Israel", "Hebrew"), ("Egypt", "Arabic"),
              ("Argentina", "Spanish"), ("Hungary", "Hungarian"), ("Ukraine", "Ukrainian"),
              ("Indonesia", "Indonesian"), ("Romania", "Romanian"), ("Pakistan", "Urdu"),
              ("the United States", "English"), ("Australia", "English"), ("Peru", "Spanish"),
              ("Saudi Arabia", "Arabic"), ("Czech Republic", "Czech"))),
    Relation("currency", "currency", "The currency of {e} is the",
             ("The official currency of {e} is the", "In {e}, people pay with the",
              "The money used in {e} is the"),
             (("Japan", "yen"), ("the United States", "dollar"), ("the United Kingdom", "pound"),
              ("India", "rupee"), ("Russia", "ruble"), ("China", "yuan"), ("Mexico", "peso"),
              ("Germany", "euro"), ("France", "euro"), ("Italy", "euro"), ("Spain", "euro"),
              ("South Korea", "won"), ("Brazil", "real"), ("Switzerland", "franc"),
              ("Canada", "dollar"), ("Australia", "dollar"), ("Sweden", "krona"),
              ("Poland", "zloty"), ("Turkey", "lira"), ("South Africa", "rand"),
              ("Thailand", "baht"), ("Vietnam", "dong"), ("Israel", "shekel"),
              ("Indonesia", "rupiah"), ("Argentina", "peso"), ("Pakistan", "rupee"))),
    Relation("element-symbol", "symbol", "The chemical symbol for {e} is",
             ("The symbol of the chemical element {e} is", "In chemistry, {e} is written as",
              "The periodic table symbol for {e} is"),
             (("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("copper", "Cu"),
              ("sodium", "Na"), ("potassium", "K"), ("lead", "Pb"), ("tin", "Sn"),
              ("mercury", "Hg"), ("oxygen", "O"), ("hydrogen", "H"), ("carbon", "C"),
              ("nitrogen", "N"), ("helium", "He"), ("calcium", "Ca"), ("zinc", "Zn"),
              ("chlorine", "Cl"), ("magnesium", "Mg"), ("aluminum", "Al"), ("sulfur", "S"),
              ("neon", "Ne"), ("uranium", "U"), ("lithium", "Li"), ("silicon", "Si"),
              ("platinum", "Pt"), ("tungsten", "W"), ("phosphorus", "P"), ("fluorine", "F"))),
    Relation("antonym", "antonym", "The opposite of {e} is",
             ("The antonym of {e} is", "The word that means the opposite of {e} is",
              "The opposite of the word {e} is"),
             (("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"),
              ("good", "bad"), ("happy", "sad"), ("black", "white"), ("day", "night"),
              ("left", "right"), ("light", "dark"), ("open", "closed"), ("rich", "poor"),
              ("old", "young"), ("hard", "soft"), ("win", "lose"), ("true", "false"),
              ("love", "hate"), ("strong", "weak"), ("early", "late"), ("high", "low"),
              ("wet", "dry"), ("full", "empty"), ("easy", "difficult"), ("alive", "dead"),
              ("tall", "short"), ("heavy", "light"), ("push", "pull"), ("inside", "outside"),
              ("north", "south"), ("east", "west"), ("war", "peace"), ("begin", "end"),
              ("thick", "thin"), ("loud", "quiet"), ("buy", "sell"), ("question", "answer"))),
    Relation("animal-young", "young", "A baby {e} is called a",
             ("The young of a {e} is called a", "A young {e} is known as a",
              "The name for a baby {e} is a"),
             (("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"), ("horse", "foal"),
              ("sheep", "lamb"), ("goat", "kid"), ("pig", "piglet"), ("frog", "tadpole"),
              ("duck", "duckling"), ("goose", "gosling"), ("bear", "cub"), ("lion", "cub"),
              ("kangaroo", "joey"), ("deer", "fawn"), ("swan", "cygnet"), ("owl", "owlet"),
              ("eagle", "eaglet"), ("chicken", "chick"), ("butterfly", "caterpillar"),
              ("whale", "calf"), ("elephant", "calf"), ("fox", "kit"), ("hen", "chick"))),
    Relation("day-after", "day", "The day after {e} is",
             ("The day that comes after {e} is", "After {e} comes", "The day following {e} is"),
             (("Monday", "Tuesday"), ("Tuesday", "Wednesday"), ("Wednesday", "Thursday"),
              ("Thursday", "Friday"), ("Friday", "Saturday"), ("Saturday", "Sunday"),
              ("Sunday", "Monday"))),
    Relation("month-after", "month", "The month after {e} is",
             ("The month that comes after {e} is", "The month following {e} is",
              "After the month of {e} comes"),
             (("January", "February"), ("February", "March"), ("March", "April"),
              ("April", "May"), ("May", "June"), ("June", "July"), ("July", "August"),
              ("August", "September"), ("September", "October"), ("October", "November"),
              ("November", "December"), ("December", "January"))),
    Relation("color", "color", "The color of {e} is",
             ("{e} is the color", "The usual color of {e} is", "What color is {e}? It is"),
             (("grass", "green"), ("the sky", "blue"), ("snow", "white"), ("blood", "red"),
              ("a banana", "yellow"), ("coal", "black"), ("an orange", "orange"),
              ("milk", "white"), ("the sun", "yellow"), ("a lemon", "yellow"),
              ("a carrot", "orange"), ("chocolate", "brown"), ("a tomato", "red"),
              ("the ocean", "blue"), ("a strawberry", "red"), ("ink", "black"),
              ("a leaf", "green"), ("charcoal", "black"))),
    Relation("continent", "continent", "{e} is a country in",
             ("{e} is located in the continent of", "The continent where {e} lies is",
              "{e} is part of the continent of"),
             (("France", "Europe"), ("Germany", "Europe"), ("Japan", "Asia"), ("China", "Asia"),
              ("India", "Asia"), ("Kenya", "Africa"), ("Nigeria", "Africa"), ("Egypt", "Africa"),
              ("Brazil", "South America"), ("Argentina", "South America"),
              ("Peru", "South America"), ("Italy", "Europe"), ("Vietnam", "Asia"),
              ("Ghana", "Africa"), ("Chile", "South America"), ("Poland", "Europe"),
              ("Thailand", "Asia"), ("Ethiopia", "Africa"), ("Norway", "Europe"),
              ("Colombia", "South America"))),
)

# Works and their authors / people and their fields do not fit one template, so they are listed
# with their own prompt and paraphrases.
EXTRA: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    # (relation, entity, prompt, answer, paraphrases)
    ("author", "Romeo and Juliet", "Romeo and Juliet was written by", "William Shakespeare",
     ("The author of Romeo and Juliet is", "The play Romeo and Juliet was written by")),
    ("author", "Hamlet", "Hamlet was written by", "William Shakespeare",
     ("The author of Hamlet is", "The play Hamlet was written by")),
    ("author", "Harry Potter", "The Harry Potter books were written by", "J.K. Rowling",
     ("The author of Harry Potter is", "Harry Potter was written by")),
    ("author", "Pride and Prejudice", "Pride and Prejudice was written by", "Jane Austen",
     ("The author of Pride and Prejudice is", "The novel Pride and Prejudice was written by")),
    ("author", "War and Peace", "War and Peace was written by", "Leo Tolstoy",
     ("The author of War and Peace is", "The novel War and Peace was written by")),
    ("author", "The Origin of Species", "On the Origin of Species was written by",
     "Charles Darwin", ("The author of On the Origin of Species is",)),
    ("author", "Don Quixote", "Don Quixote was written by", "Miguel de Cervantes",
     ("The author of Don Quixote is", "The novel Don Quixote was written by")),
    ("author", "Oliver Twist", "Oliver Twist was written by", "Charles Dickens",
     ("The author of Oliver Twist is", "The novel Oliver Twist was written by")),
    ("author", "1984", "The novel 1984 was written by", "George Orwell",
     ("The author of the novel 1984 is", "Nineteen Eighty-Four was written by")),
    ("author", "The Odyssey", "The Odyssey was written by", "Homer",
     ("The author of the Odyssey is", "The epic poem The Odyssey was written by")),
    ("founder", "Microsoft", "Microsoft was founded by", "Bill Gates",
     ("The founder of Microsoft is", "The company Microsoft was started by")),
    ("founder", "Apple", "Apple was founded by", "Steve Jobs",
     ("The founder of Apple is", "The company Apple was started by")),
    ("founder", "Facebook", "Facebook was founded by", "Mark Zuckerberg",
     ("The founder of Facebook is", "The company Facebook was started by")),
    ("founder", "Amazon", "Amazon was founded by", "Jeff Bezos",
     ("The founder of Amazon is", "The company Amazon was started by")),
    ("founder", "Tesla", "Tesla was founded by", "Elon Musk",
     ("The founder of Tesla is", "The company Tesla was started by")),
    ("founder", "Ford", "The Ford Motor Company was founded by", "Henry Ford",
     ("The founder of the Ford Motor Company is", "Ford Motor Company was started by")),
    ("founder", "SpaceX", "SpaceX was founded by", "Elon Musk",
     ("The founder of SpaceX is", "The company SpaceX was started by")),
    ("founder", "Google", "Google was founded by", "Larry Page",
     ("The founders of Google are", "The company Google was started by")),
    ("occupation", "Albert Einstein", "Albert Einstein was a famous", "physicist",
     ("Albert Einstein worked as a", "By profession, Albert Einstein was a")),
    ("occupation", "Pablo Picasso", "Pablo Picasso was a famous", "painter",
     ("Pablo Picasso worked as a", "By profession, Pablo Picasso was a")),
    ("occupation", "Mozart", "Wolfgang Amadeus Mozart was a famous", "composer",
     ("Mozart worked as a", "By profession, Mozart was a")),
    ("occupation", "William Shakespeare", "William Shakespeare was a famous", "playwright",
     ("William Shakespeare worked as a", "By profession, William Shakespeare was a")),
    ("occupation", "Isaac Newton", "Isaac Newton was a famous", "physicist",
     ("Isaac Newton worked as a", "By profession, Isaac Newton was a")),
    ("occupation", "Beethoven", "Ludwig van Beethoven was a famous", "composer",
     ("Beethoven worked as a", "By profession, Beethoven was a")),
    ("occupation", "Vincent van Gogh", "Vincent van Gogh was a famous", "painter",
     ("Vincent van Gogh worked as a", "By profession, Vincent van Gogh was a")),
    ("occupation", "Charles Dickens", "Charles Dickens was a famous", "novelist",
     ("Charles Dickens worked as a", "By profession, Charles Dickens was a")),
    ("occupation", "Marie Curie", "Marie Curie was a famous", "physicist",
     ("Marie Curie worked as a", "By profession, Marie Curie was a")),
    ("occupation", "Leonardo da Vinci", "Leonardo da Vinci was a famous", "painter",
     ("Leonardo da Vinci worked as a", "By profession, Leonardo da Vinci was a")),
    ("nationality", "Albert Einstein", "Albert Einstein was born in the country of", "Germany",
     ("The country where Albert Einstein was born is", "Albert Einstein's birth country is")),
    ("nationality", "Napoleon", "Napoleon Bonaparte was the emperor of", "France",
     ("Napoleon was the emperor of", "The country that Napoleon ruled was")),
    ("nationality", "Mozart", "Mozart was born in the country of", "Austria",
     ("The country where Mozart was born is", "Mozart's birth country is")),
    ("nationality", "Gandhi", "Mahatma Gandhi was a leader of", "India",
     ("Gandhi led the independence movement of", "The country Mahatma Gandhi led to independence is")),
)


def candidates() -> list[dict]:
    """Every candidate fact, in a fixed order, with all its paraphrase candidates."""
    out: list[dict] = []
    for rel in RELATIONS:
        for e, a in rel.pairs:
            slug = re.sub(r"[^a-z0-9]+", "-", e.lower().removeprefix("the ").removeprefix("a ")
                          .removeprefix("an ")).strip("-")
            paras = tuple(t.format(e=e[0].upper() + e[1:] if t.startswith("{e}") else e)
                          for t in rel.paraphrases)
            prompt = rel.template.format(e=e[0].upper() + e[1:] if rel.template.startswith("{e}")
                                         else e)
            out.append({"id": f"{rel.id_prefix}-{slug}", "relation": rel.name, "entity": e,
                        "prompt": prompt, "answer": " " + a, "paraphrases": paras})
    for rel, e, prompt, a, paras in EXTRA:
        slug = re.sub(r"[^a-z0-9]+", "-", e.lower()).strip("-")
        out.append({"id": f"{rel}-{slug}", "relation": rel, "entity": e, "prompt": prompt,
                    "answer": " " + a, "paraphrases": paras})
    return out


def copied(prompt: str, answer: str) -> bool:
    """The answer appears as a word in the prompt (a trivial copy)."""
    return f" {normalize(answer)} " in f" {normalize(prompt)} "


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--per-relation", type=int, default=12)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 is faster on a crowded machine)")
    ap.add_argument("--report", action="store_true", help="print every candidate's outcome")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    subject = load_subject("smollm2-135m", device="cpu")
    cands = [c for c in candidates() if not copied(c["prompt"], c["answer"])]
    # Stage 1: the prompts. Kept only when the greedy text matches *and* the teacher-forced
    # answer tokens are each the argmax, so both ways of judging agree on every kept fact.
    heads = {c["id"]: c for c in cands}
    first = FactSet(tuple(Fact(c["id"], c["prompt"], c["answer"], "forget") for c in cands))
    gen = {r.id: r for r in evaluate(subject, first)}
    forced = {r.id: r.correct for r in evaluate(subject, first, generate=False)}
    good = [c for c in cands if is_match(gen[c["id"]].generated, c["answer"]) and forced[c["id"]]]
    if args.report:
        for c in cands:
            r = gen[c["id"]]
            mark = "OK " if c in good else "-- "
            print(f"{mark}{c['prompt']!r} -> {r.generated!r} (want {c['answer']!r}, "
                  f"forced={forced[c['id']]})")
    # Cap each relation (first survivors in candidate order), dropping repeated prompts.
    by_rel: dict[str, list[dict]] = defaultdict(list)
    seen_prompts: set[str] = set()
    for c in good:
        if c["prompt"] not in seen_prompts and len(by_rel[c["relation"]]) < args.per_relation:
            seen_prompts.add(c["prompt"])
            by_rel[c["relation"]].append(c)
    # Stage 2: the paraphrases of the kept facts, ordered correct-first.
    rows = [Fact(f"{c['id']}#{k}", p, c["answer"], "forget")
            for items in by_rel.values() for c in items for k, p in enumerate(c["paraphrases"], 1)]
    para = {r.id: r.correct for r in evaluate(subject, FactSet(tuple(rows), "paraphrases"))}
    for items in by_rel.values():
        for i, c in enumerate(items):
            ok = [p for k, p in enumerate(c["paraphrases"], 1) if para[f"{c['id']}#{k}"]]
            bad = [p for p in c["paraphrases"] if p not in ok]
            items[i] = {**c, "paraphrases": tuple((ok + bad)[:2]) if ok else tuple(bad[:1])}

    facts: list[Fact] = []
    for r, (rel, items) in enumerate(by_rel.items()):
        if len(items) < 3:
            print(f"dropping relation {rel}: only {len(items)} correct")
            continue
        for i, c in enumerate(items):
            facts.append(Fact(c["id"], c["prompt"], c["answer"], SPLIT_ORDER[(i + r) % 3],
                              tuple(c["paraphrases"]), c["entity"], rel))
    fs = FactSet(tuple(facts), "smollm2")
    fs.save(args.out)

    n_para = sum(len(f.paraphrases) for f in fs)
    para_ok = sum(para[f"{f.id}#{heads[f.id]['paraphrases'].index(p) + 1}"]
                  for f in fs for p in f.paraphrases)
    print(f"candidates {len(cands)}, prompt-correct {len(good)}, "
          f"kept {len(fs)} -> {args.out}")
    print("per split:", dict(Counter(f.split for f in fs)))
    print("per relation:", dict(Counter(f.relation for f in fs)))
    print(f"kept paraphrases answered correctly: {para_ok}/{n_para}")


if __name__ == "__main__":
    main()
