"""Bad bytes in every loader's input give one clear line naming the file and the problem.

Fact files, GGUF files, checkpoint directories (config.json, safetensors, tokenizer), saved edits
and SAE directories are each corrupted in small ways; the loader must raise a `WorkbenchError`
subclass whose message is a single line naming the file, and the CLI must exit 2 with that line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from workbench.errors import FactFileError, ModelLoadError, WorkbenchError
from workbench.facts import Fact, FactSet
from workbench.inputs import read_json, read_tensors
from workbench.models import bundled_gguf_path, gguf_cache_dir, load_subject, materialize_gguf

GOOD_LINE = '{"id": "a", "prompt": "P", "answer": " x", "split": "forget"}\n'
Mutate = Callable[[Path], object]


def assert_clear(err: BaseException, path: Path | str, *fragments: str) -> None:
    """`err` is one line that names `path` and says each of `fragments`."""
    msg = str(err)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg


# ----- fact files ---------------------------------------------------------------------------
@pytest.mark.parametrize("data,fragments", [
    (GOOD_LINE.encode() + b'{"id": "b", "prompt": "caf\xe9", "answer": " x", "split": "forget"}\n',
     (":2:", "not UTF-8", "0xe9", "column 27")),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", ("binary", "NUL")),
    (b"\x00" * 16, (":1:", "binary")),
    (GOOD_LINE.encode("utf-16"), ("UTF-16",)),
    (b"", ("no facts",)),
    (b"\n# only a comment\n", ("no facts",)),
], ids=["latin1", "png", "nul", "utf16", "empty", "comment-only"])
def test_bad_fact_files(tmp_path, data, fragments):
    path = tmp_path / "facts.jsonl"
    path.write_bytes(data)
    with pytest.raises(FactFileError) as e:
        FactSet.load(path)
    assert_clear(e.value, path, *fragments)
    assert path.read_bytes() == data  # the input is never rewritten


def test_fact_file_that_is_a_directory(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(FactFileError) as e:
        FactSet.load(tmp_path / "dir.jsonl")
    assert_clear(e.value, tmp_path / "dir.jsonl", "directory")


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_LINE.encode())
    assert [f.id for f in FactSet.load(path)] == ["a"]


def test_line_separator_inside_a_fact_round_trips(tmp_path):
    fs = FactSet((Fact("a", "one\u2028two", " x", "forget"),))
    assert FactSet.load(fs.save(tmp_path / "f.jsonl")).facts == fs.facts


# ----- shared readers -----------------------------------------------------------------------
@pytest.mark.parametrize("text,fragments", [
    ("{oops", (":1:", "invalid JSON", "column 2")),
    ('{"a": 1,\n"b": }', (":2:", "invalid JSON")),
    ("[1, 2]", ("expected a JSON object", "array")),
    ("", ("empty",)),
], ids=["syntax", "line2", "array", "empty"])
def test_read_json_errors(tmp_path, text, fragments):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(WorkbenchError) as e:
        read_json(path)
    assert_clear(e.value, path, *fragments)


def test_read_json_missing_file(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        read_json(tmp_path / "none.json", ModelLoadError)
    assert_clear(e.value, tmp_path / "none.json", "not found")


def test_read_tensors_refuses_nan_and_missing_tensors(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.tensor([1.0, float("nan")])}, str(path))
    with pytest.raises(WorkbenchError) as e:
        read_tensors(path)
    assert_clear(e.value, path, "'a'", "NaN")
    save_file({"a": torch.ones(2)}, str(path))
    with pytest.raises(WorkbenchError) as e:
        read_tensors(path, required=("a", "b"))
    assert_clear(e.value, path, "missing tensor(s) ['b']")


# ----- GGUF files ---------------------------------------------------------------------------
def _gguf_head(n: int) -> bytes:
    with bundled_gguf_path().open("rb") as fh:
        return fh.read(n)


@pytest.mark.parametrize("make,fragments", [
    (lambda: b"", ("empty file",)),
    (lambda: b"not a gguf file at all" * 10, ("not a GGUF file", "b'not '")),
    (lambda: _gguf_head(100), ("truncated or corrupt",)),
    (lambda: _gguf_head(2_000_000), ("truncated or corrupt",)),
], ids=["zero-bytes", "garbage", "header-cut", "tensors-cut"])
def test_bad_gguf_files(tmp_path, make, fragments):
    path = tmp_path / "model.gguf"
    path.write_bytes(make())
    with pytest.raises(ModelLoadError) as e:
        load_subject(str(path), device="cpu")
    assert_clear(e.value, path, *fragments)
    assert not gguf_cache_dir(path).exists()  # no half-written cache entry


# ----- checkpoint directories ---------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint over the bundled tokenizer (no model load needed)."""
    from transformers import AutoTokenizer

    from tests.conftest import make_tiny_subject

    tok = AutoTokenizer.from_pretrained(materialize_gguf(bundled_gguf_path()))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return make_tiny_subject(tok).save(tmp_path_factory.mktemp("ckpt") / "good")


def _copy(src: Path, dst: Path, mutate: Mutate) -> Path:
    shutil.copytree(src, dst)
    mutate(dst)
    return dst


def _edit_json(name: str, **changes: object) -> Mutate:
    """A mutation that rewrites the JSON file `name` with `changes` (None drops a key)."""
    def mutate(d: Path) -> None:
        doc = json.loads((d / name).read_text())
        doc.update(changes)
        (d / name).write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))
    return mutate


def _cut(name: str, keep: int) -> Mutate:
    """Keep the first `keep` bytes of `name` (negative: drop the last -keep)."""
    return lambda d: (d / name).write_bytes((d / name).read_bytes()[:keep])


W = "model.safetensors"
CHECKPOINT_CASES: dict[str, tuple[Mutate, str, tuple[str, ...]]] = {
    "weights-truncated": (_cut(W, -5000), W, ("not a readable safetensors", "truncated")),
    "weights-header-cut": (_cut(W, 1000), W, ("not a readable safetensors",)),
    "weights-garbage": (lambda d: (d / W).write_bytes(b"\xff" * 64), W, ("safetensors",)),
    "weights-empty": (lambda d: (d / W).write_bytes(b""), W, ("safetensors",)),
    "weights-missing": (lambda d: (d / W).unlink(), "", ("no weights",)),
    "config-invalid-json": (lambda d: (d / "config.json").write_text("{oops"), "config.json",
                            (":1:", "invalid JSON")),
    "config-not-object": (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json",
                          ("expected a JSON object",)),
    "config-not-utf8": (lambda d: (d / "config.json").write_bytes(b'{"a": "\xe9"}'),
                        "config.json", ("not UTF-8",)),
    "config-unknown-type": (_edit_json("config.json", model_type="nosuchmodel"), "config.json",
                            ("unknown model_type 'nosuchmodel'",)),
    "config-no-type": (_edit_json("config.json", model_type=None), "config.json",
                       ("no 'model_type'",)),
    "config-bad-value": (_edit_json("config.json", hidden_size="big"), "config.json",
                         ("hidden_size",)),
    "config-shape-mismatch": (_edit_json("config.json", hidden_size=32), "",
                              ("do not fit config.json", W, "[49152, 64]", "[49152, 32]")),
    "tokenizer-missing": (lambda d: [(d / n).unlink() for n in ("tokenizer.json",
                                                                 "tokenizer_config.json")],
                          "", ("no tokenizer",)),
    "tokenizer-corrupt": (lambda d: (d / "tokenizer.json").write_text("{oops"), "tokenizer.json",
                          ("invalid JSON",)),
    "subject-meta-corrupt": (lambda d: (d / "workbench_subject.json").write_text("{"),
                             "workbench_subject.json", ("invalid JSON",)),
    "weight-edit-json-corrupt": (lambda d: (d / "edit.json").write_text("[]"), "edit.json",
                                 ("expected a JSON object",)),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_dirs(checkpoint, tmp_path, case):
    mutate, name, fragments = CHECKPOINT_CASES[case]
    bad = _copy(checkpoint, tmp_path / "bad", mutate)
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    with pytest.raises(ModelLoadError) as e:
        load_subject(str(bad), device="cpu")
    assert_clear(e.value, bad / name if name else bad, *fragments)
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before


def test_nan_weights_name_the_parameter(checkpoint, tmp_path):
    def poison(d: Path) -> None:
        t = load_file(str(d / W))
        t["model.norm.weight"][0] = float("nan")
        save_file(t, str(d / W), metadata={"format": "pt"})

    bad = _copy(checkpoint, tmp_path / "bad", poison)
    with pytest.raises(ModelLoadError) as e:
        load_subject(str(bad), device="cpu")
    assert_clear(e.value, bad, "model.norm.weight", "NaN")


# ----- saved edits --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_edit(checkpoint, tmp_path_factory) -> Path:
    """An inference-time steering edit on `checkpoint`, saved."""
    from workbench.edits import Edit
    from workbench.operators.interventions import ResidualSteer

    base = load_subject(str(checkpoint), device="cpu")
    steered = base.with_interventions(ResidualSteer((0,), torch.randn(1, base.d_model),
                                                    torch.ones(1)))
    edit = Edit("steer", "suppression-intended", "intervention", {}, 0, steered,
                base=str(checkpoint))
    return edit.save(tmp_path_factory.mktemp("edit") / "good")


def _spec(**changes: object) -> Mutate:
    """Rewrite the first intervention's spec in edit.json (None drops a key)."""
    def mutate(d: Path) -> None:
        doc = json.loads((d / "edit.json").read_text())
        spec = doc["interventions"][0] | changes
        doc["interventions"] = [{k: v for k, v in spec.items() if v is not None}]
        (d / "edit.json").write_text(json.dumps(doc))
    return mutate


def _steer_tensors(change: Callable[[dict], object]) -> Mutate:
    def mutate(d: Path) -> None:
        path = d / IV / "steer.safetensors"
        t = load_file(str(path))
        change(t)
        save_file(t, str(path))
    return mutate


IV = "interventions/00-steer"
ST = f"{IV}/steer.safetensors"
EDIT_CASES: dict[str, tuple[Mutate, str, tuple[str, ...]]] = {
    "json-invalid": (lambda d: (d / "edit.json").write_text("{oops"), "edit.json",
                     ("invalid JSON",)),
    "json-not-object": (lambda d: (d / "edit.json").write_text("[]"), "edit.json",
                        ("expected a JSON object",)),
    "json-not-utf8": (lambda d: (d / "edit.json").write_bytes(b'{"base": "\xe9"}'), "edit.json",
                      ("not UTF-8",)),
    "no-base": (_edit_json("edit.json", base=None), "edit.json", ("no 'base'",)),
    "base-missing": (_edit_json("edit.json", base="/no/such/model"), "",
                     ("base model", "/no/such/model")),
    "interventions-not-list": (_edit_json("edit.json", interventions="steer"), "edit.json",
                               ("'interventions' must be a list",)),
    "intervention-no-dir": (_spec(dir=None), "edit.json", ("'dir'",)),
    "unknown-kind": (_spec(type="warp"), IV, ("unknown intervention kind 'warp'", "steer")),
    "spec-field-missing": (_spec(layers=None), IV, ("no field 'layers'",)),
    "spec-field-bad": (_spec(mode="sideways"), IV, ("unknown steering mode 'sideways'",)),
    "dir-missing": (lambda d: shutil.rmtree(d / IV), IV, ("directory is missing",)),
    "tensors-missing": (lambda d: (d / ST).unlink(), ST, ("file not found",)),
    "tensors-corrupt": (lambda d: (d / ST).write_bytes(b"garbage!" * 3), ST,
                        ("not a readable safetensors",)),
    "tensor-absent": (_steer_tensors(lambda t: t.pop("directions")), ST,
                      ("missing tensor(s) ['directions']",)),
    "tensor-nan": (_steer_tensors(lambda t: t["directions"].fill_(float("nan"))), ST,
                   ("'directions'", "NaN")),
}


@pytest.mark.parametrize("case", sorted(EDIT_CASES))
def test_bad_saved_edits(saved_edit, tmp_path, case):
    mutate, name, fragments = EDIT_CASES[case]
    bad = _copy(saved_edit, tmp_path / "bad", mutate)
    with pytest.raises(WorkbenchError) as e:
        load_subject(str(bad), device="cpu")
    assert_clear(e.value, bad / name if name else bad, *fragments)


# ----- SAE directories ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory) -> Path:
    """A tiny TopK SAE saved in SAELens' format plus the workbench's metadata file."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from saes.train import META_FILE

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("sae") / "good"
    TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=2)).save_model(out)
    (out / META_FILE).write_text(json.dumps({"hook_name": "blocks.0.hook_resid_post"}))
    return out


SW = "sae_weights.safetensors"
SAE_CASES: dict[str, tuple[Mutate, str, tuple[str, ...]]] = {
    "cfg-invalid": (lambda d: (d / "cfg.json").write_text("{oops"), "cfg.json",
                    ("invalid JSON",)),
    "cfg-not-object": (lambda d: (d / "cfg.json").write_text("[]"), "cfg.json",
                       ("expected a JSON object",)),
    "cfg-architecture": (_edit_json("cfg.json", architecture="nosuch"), "cfg.json",
                         ("unknown SAE architecture 'nosuch'",)),
    "cfg-field-missing": (_edit_json("cfg.json", d_in=None), "", ("d_in",)),
    "cfg-shape": (_edit_json("cfg.json", d_sae=32), "", ("size mismatch",)),
    "weights-missing": (lambda d: (d / SW).unlink(), SW, ("file not found",)),
    "weights-truncated": (_cut(SW, 50), SW, ("not a readable safetensors",)),
    "weights-nan": (lambda d: save_file({k: v.fill_(float("nan")) if k == "W_dec" else v
                                         for k, v in load_file(str(d / SW)).items()},
                                        str(d / SW)), SW, ("W_dec", "NaN")),
    "meta-invalid": (lambda d: (d / "workbench_sae.json").write_text("{"), "workbench_sae.json",
                     ("invalid JSON",)),
}


@pytest.mark.parametrize("case", sorted(SAE_CASES))
def test_bad_sae_dirs(sae_dir, tmp_path, case):
    from saes.load import load_sae

    assert load_sae(sae_dir, device="cpu").hook == "blocks.0.hook_resid_post"
    mutate, name, fragments = SAE_CASES[case]
    bad = _copy(sae_dir, tmp_path / "bad", mutate)
    with pytest.raises(WorkbenchError) as e:
        load_sae(bad, device="cpu")
    assert_clear(e.value, bad / name if name else bad, *fragments)


# ----- the CLI: exit code 2 and one line ------------------------------------------------------
def _cli_error(args: list[str]) -> str:
    from apps.cli import app

    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def test_cli_bad_fact_file_is_one_line(tmp_path):
    path = tmp_path / ("a-rather-long-directory-name-" * 3) / "facts.jsonl"
    path.parent.mkdir()
    path.write_bytes(GOOD_LINE.encode() + b'{"id": "\xff"}\n')
    for args in (["facts", "validate", str(path)], ["eval", "--facts", str(path)]):
        line = _cli_error(args)
        assert f"{path}:2: not UTF-8" in line, line


def test_cli_bad_model_is_one_line(checkpoint, tmp_path):
    bad = _copy(checkpoint, tmp_path / "bad", _cut(W, 1000))
    line = _cli_error(["eval", "--model", str(bad), "--device", "cpu"])
    assert f"{bad / W}: not a readable safetensors file" in line, line
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"")
    line = _cli_error(["eval", "--model", str(gguf), "--device", "cpu"])
    assert f"{gguf}: empty file" in line, line
