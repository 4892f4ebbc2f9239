"""The dashboard's six pages, each driven through its widgets with Streamlit's AppTest on the toy
world, their results checked against what the library says of the same models."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import apps.dashboard
from workbench.behavior import evaluate

VIEWS = Path(apps.dashboard.__file__).parent / "views"
W = "toy world"  # the sidebar's active world; the pickers' keys carry its name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def page(name: str, runs: Path, toyworld) -> AppTest:
    """Page `name` run once on its own, with the toy world of this session active."""
    at = AppTest.from_file(str(VIEWS / f"{name}.py"), default_timeout=120)
    at.session_state["runs"] = str(runs)
    at.session_state["world"] = W
    at.session_state["world_seed"] = toyworld.stats["config"]["seed"]
    return at.run()


def settle(at: AppTest, job: str):
    """Wait for the page's background job `job`, redraw the page, return the job."""
    done = at.session_state[f"job:{job}"].wait(600)
    at.run()
    assert done.error is None, done.error
    return done


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def click(at: AppTest, key: str) -> AppTest:
    return at.button(key=key).click().run()


# ----- Model & facts ---------------------------------------------------------------------------

def test_model_and_facts_answers_and_lens(runs, toyworld, toy_original, toy_facts):
    at = clean(page("model_facts", runs, toyworld))
    at.number_input(key="mf.limit").set_value(1000)
    job = settle(click(at, "mf.run"), "model_facts")
    clean(at)
    acc = {m.label.removesuffix(" accuracy"): float(m.value.rstrip("%")) / 100 for m in at.metric}
    assert acc["forget"] >= 0.8 and acc["retain"] >= 0.8  # the original knows its trained people
    assert acc["unseen"] < 0.5 < acc["forget"] - 0.3  # ... and not the people it never saw
    table = at.dataframe[0].value
    direct = {r.id: r.correct for r in evaluate(toy_original, toy_facts)}
    assert len(table) == len(toy_facts)
    assert dict(zip(table["id"], table["correct"], strict=True)) == direct
    rank = job.result["rank"]
    assert rank.shape == (toy_original.n_layers, len(toy_facts))
    assert (rank[-1][table["correct"].to_numpy()] == 0).mean() > 0.9  # correct: top at the end
    assert at.get_by_key("mf.lens") is not None


BAD = (b'{"id": "a", "prompt": "x is", "answer": " y", "split": "forget"}\n'
       b'{"id": "b", "prompt": "z is", "split": "forget"}\n')


@pytest.mark.parametrize("how", ["file path", "upload"])
def test_a_bad_fact_file_names_its_line(runs, toyworld, tmp_path, how):
    at = page("model_facts", runs, toyworld)
    at.radio(key=f"mf.facts.{W}").set_value(how).run()
    if how == "file path":
        (tmp_path / "bad.jsonl").write_bytes(BAD)
        at.text_input(key="mf.facts_path").input(str(tmp_path / "bad.jsonl")).run()
    else:
        at.file_uploader(key="mf.upload").upload("bad.jsonl", BAD).run()
        assert list((runs / "uploads").glob("*/bad.jsonl"))  # kept under the runs folder
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "bad.jsonl:2" in errors[0] and "answer" in errors[0]
    assert "Traceback" not in errors[0] and not at.exception
    assert at.button(key="mf.run").disabled


def test_a_model_that_does_not_load_is_one_line_on_the_page(runs, toyworld, tmp_path):
    at = page("model_facts", runs, toyworld)
    at.radio(key=f"mf.source.{W}").set_value("path or hub id").run()
    at.text_input(key="mf.path").input(str(tmp_path / "no-such-model")).run()
    job = at.button(key="mf.run").click().run().session_state["job:model_facts"].wait(60)
    at.run()
    errors = [e.value for e in at.error]
    assert job.error is not None and errors == [job.error]
    assert "no-such-model" in errors[0] and "\n" not in errors[0] and not at.exception


# ----- Unlearn ---------------------------------------------------------------------------------

def test_unlearn_refuses_a_bad_value_before_any_work(runs, toyworld):
    at = page("unlearn", runs, toyworld)
    at.number_input(key="ul.0.ga.lr").set_value(0.0)
    click(at, "ul.run")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "lr must be > 0" in errors[0], errors
    assert at.session_state.get("job:unlearn") is None  # nothing started


@pytest.fixture(scope="module")
def unlearned(runs, toyworld):
    """Gradient ascent for 30 steps from the Unlearn page: (page, job)."""
    at = page("unlearn", runs, toyworld)
    at.number_input(key="ul.0.ga.steps").set_value(30)
    at.text_input(key="ul.name").input("ga-30").run()
    return at, settle(click(at, "ul.run"), "unlearn")


def test_unlearn_ga_reports_progress_and_saves_the_edit(unlearned, runs, toy_facts):
    at, job = unlearned
    clean(at)
    steps = job.of("train")
    assert [e.done for e in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 10
    assert all(e.total == 30 and "loss" in e.metrics for e in steps)
    assert "forget" in steps[-1].metrics and steps[-1].metrics["forget"] < 0.8
    doc = job.result
    before, after = doc["before"], doc["after"]
    assert after["forget"]["accuracy"] < before["forget"]["accuracy"] - 0.2
    assert after["retain"]["accuracy"] > before["retain"]["accuracy"] - 0.2
    saved = runs / "edits" / "ga-30"
    assert json.loads((saved / "edit.json").read_text())["chain"][0]["operator"] == "ga"
    shown = at.dataframe[0].value
    forget_row = shown[shown["split"] == "forget"].iloc[0]
    assert forget_row["accuracy after"] == pytest.approx(after["forget"]["accuracy"], abs=1e-3)


# ----- Audit -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def audited(runs, toyworld):
    """The retrain oracle audited as if it were an edit of the original (quick tier)."""
    at = page("audit", runs, toyworld)
    at.radio(key=f"au.m1.source.{W}").set_value("world oracle").run()
    at.text_input(key="au.name").input("oracle").run()
    return at, settle(click(at, "au.run"), "audit")


def test_audit_of_the_oracle_reads_removed(audited):
    at, job = audited
    clean(at)
    run = job.result
    assert run.verdict.verdict == "removed" and run.verdict.removal_score > 0.5
    steps = job.of("audit")  # per-module progress, one unit per module and one for behaviour
    assert [e.done for e in steps] == list(range(len(run.findings) + 2))
    assert [e.metrics.get("module") for e in steps[1:-1]] == list(run.findings)
    card = " ".join(h.value for h in at.html)
    assert "REMOVED" in card and "removal score" in card
    labels = {e.label.split(":")[0] for e in at.expander}
    assert set(run.findings) <= labels  # every finding has its expander (with its figure)
    assert set(run.findings) >= {"logit_lens", "activation_patching"}


def test_a_fresh_session_redraws_the_run_from_disk(audited, runs, toyworld, monkeypatch):
    import workbench.models

    def no_model(*args, **kwargs):
        raise AssertionError("opening a past run loaded a model")

    monkeypatch.setattr(workbench.models, "load_subject", no_model)
    at = page("audit", runs, toyworld)
    at.selectbox(key="au.past").set_value(str(runs / "audits" / "oracle")).run()
    click(at, "au.open")
    clean(at)
    card = " ".join(h.value for h in at.html)
    assert "REMOVED" in card
    assert f"removal score {audited[1].result.verdict.removal_score:.2f}" in card
    assert at.get("plotly_chart") == []  # a figure is drawn when its finding is opened
    at.session_state["au.past_run.exp.activation_patching"] = True
    clean(at.run())
    assert [c.key for c in at.get("plotly_chart")] == ["au.past_run.fig.activation_patching"]


def test_audit_unlearns_first_and_reuses_the_edit(runs, toyworld):
    at = page("audit", runs, toyworld)
    at.radio(key="au.mode").set_value(at.radio(key="au.mode").options[1]).run()
    at.number_input(key="au.op.ga.steps").set_value(5)
    at.multiselect(key="au.modules").set_value(["logit_lens"])
    at.text_input(key="au.name").input("ga-then-audit").run()
    first = settle(click(at, "au.run"), "audit").result
    clean(at)
    edit = runs / "audits" / "ga-then-audit" / "edit"
    made = (edit / "edit.json").stat().st_mtime_ns
    assert first.report["reproduce"].startswith("workbench unlearn")
    assert "steps=5" in first.report["reproduce"] and first.report["specs"]["M1"]["spec"] == str(
        edit)
    again = settle(click(at, "au.run"), "audit").result
    assert (edit / "edit.json").stat().st_mtime_ns == made  # same inputs: the edit is reused
    assert again.verdict == first.verdict
    at.number_input(key="au.op.ga.steps").set_value(6)
    settle(click(at, "au.run"), "audit")
    assert (edit / "edit.json").stat().st_mtime_ns != made  # another config: a new edit


# ----- Internals -------------------------------------------------------------------------------

def test_internals_places_the_answer_and_patches_a_cell(runs, toyworld, toy_original,
                                                         toy_oracle, toy_facts):
    from probes.internals import patched_predictions

    forget = toy_facts.forget
    r0, rr = evaluate(toy_original, forget), evaluate(toy_oracle, forget)
    i = next(i for i, (a, b) in enumerate(zip(r0, rr, strict=True)) if a.correct and not b.correct)
    at = page("internals", runs, toyworld)
    at.radio(key=f"in.m1.source.{W}").set_value("world oracle").run()
    at.selectbox(key="in.split").set_value("forget").run()
    at.selectbox(key="in.fact").select_index(i).run()
    job = settle(click(at, "in.run"), "internals")
    clean(at)
    _, view = job.result
    assert view.prompt == forget[i].prompt
    captions = " ".join(c.value for c in at.caption)
    assert "M0 ranks the answer 1 at its last layer" in captions
    assert view.lens["M1"].answer_rank[-1, -1] > 0 and "M1 ranks the answer 1 " not in captions
    layer, pos = toy_original.n_layers - 2, len(view.tokens) - 1
    at.selectbox(key="in.layer").set_value(layer)
    at.selectbox(key="in.position").set_value(pos).run()
    cell = settle(click(at, "in.patch"), "internals.cell").result
    direct = patched_predictions(toy_original, toy_oracle, forget[i].prompt, forget[i].answer,
                                 layer, pos)
    shown = at.dataframe[0].value
    assert list(shown["patched M1"]) == [t for t, _ in direct.top]
    assert list(shown["p"]) == pytest.approx([round(p, 4) for _, p in direct.top], abs=2e-4)
    assert cell.continuation == direct.continuation
    code = at.code[-1].value
    assert "compare_prompt(m0, m1" in code and f"layer={layer}" in code


# ----- SAE features ----------------------------------------------------------------------------

def test_sae_features_rank_and_clamp(runs, toyworld, toy_original, toy_facts):
    at = page("sae", runs, toyworld)
    job = settle(click(at, "sae.run"), "sae")
    clean(at)
    stats = job.result["stats"]
    assert len(stats) >= 3 and [s.score for s in stats] == sorted((s.score for s in stats),
                                                                  reverse=True)
    assert sum(s.forget_rate > s.retain_rate for s in stats) > len(stats) / 2
    assert len(at.dataframe[0].value) == len(stats)
    clamp = settle(click(at, "sae.clamp"), "sae.clamp")
    clean(at)
    rows = clamp.result
    plain = evaluate(toy_original, toy_facts.forget)
    assert [r["without clamp"] for r in rows] == [r.generated for r in plain]
    assert sum(r["changed"] for r in rows) >= 1  # clamping changes some greedy answer
    assert any("Clamping changes" in m.value for m in at.markdown)


# ----- Runs ------------------------------------------------------------------------------------

def test_runs_lists_filters_and_compares_without_a_model(unlearned, audited, runs, toyworld,
                                                         monkeypatch):
    import workbench.models

    monkeypatch.setattr(workbench.models, "load_subject",
                        lambda *a, **k: pytest.fail("the Runs page loaded a model"))
    shutil.copytree(runs / "audits" / "oracle", runs / "audits" / "oracle-copy")
    at = clean(page("runs", runs, toyworld))
    table = at.dataframe[0].value
    kinds = dict(zip(table["run"], table["kind"], strict=True))
    assert kinds["edits/ga-30"] == "edit" and kinds["audits/oracle"] == "audit"
    at.multiselect(key="rn.kind").set_value(["audit"]).run()
    assert set(at.dataframe[0].value["kind"]) == {"audit"}
    at.text_input(key="rn.text").input("copy").run()
    assert list(at.dataframe[0].value["run"]) == ["audits/oracle-copy"]
    at.text_input(key="rn.text").input("").run()
    at.multiselect(key="rn.compare").set_value(["audits/oracle", "audits/oracle-copy"]).run()
    side = at.dataframe[1].value.set_index("")
    score = f"{audited[1].result.verdict.removal_score:.3f}"
    assert list(side.loc["removal score"]) == [score, score]
    assert set(side.loc["verdict"]) == {"removed"}


# ----- the entry point -------------------------------------------------------------------------

def test_the_entry_point_serves_every_page_with_one_sidebar(runs, toyworld):
    at = AppTest.from_file(str(VIEWS.parent / "app.py"), default_timeout=120)
    at.session_state["runs"] = str(runs)
    clean(at.run())
    assert at.title[0].value == "Model & facts"
    at.sidebar.radio(key="world").set_value(W).run()
    for view, title in (("unlearn", "Unlearn"), ("audit", "Audit"), ("internals", "Internals"),
                        ("sae", "SAE features"), ("runs", "Runs")):
        clean(at.switch_page(f"views/{view}.py").run())
        assert at.title[0].value == title
        assert at.sidebar.radio(key="world").value == W  # the sidebar's choice persists
        assert at.sidebar.text_input(key="runs").value == str(runs)
        if view == "audit":  # a choice made on a page is still there when the user comes back
            at.radio(key=f"au.m1.source.{W}").set_value("world oracle").run()
    clean(at.switch_page("views/audit.py").run())
    assert at.radio(key=f"au.m1.source.{W}").value == "world oracle"


def test_no_page_writes_by_accident():
    """Streamlit's "magic" writes every bare expression of a page script but a call (a tuple of
    calls included): a page must hold none but its docstrings."""
    for path in [*VIEWS.glob("*.py"), VIEWS.parent / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call):
                assert isinstance(node.value, ast.Constant) and isinstance(node.value.value,
                                                                           str), (
                    f"{path.name}:{node.lineno}: {ast.unparse(node)}")


def test_workbench_app_starts_streamlit_without_a_shell(monkeypatch):
    from typer.testing import CliRunner

    from apps.cli import app, dashboard

    started = []

    class Server:
        def wait(self) -> int:
            return 0

    monkeypatch.setattr(dashboard, "serve", lambda *a, **k: started.append(a) or Server())
    res = CliRunner().invoke(app, ["app", "--host", "0.0.0.0", "--port", "8600", "--runs", "r"])
    assert res.exit_code == 0, res.output
    assert "warning: listening on 0.0.0.0" in res.output  # not this machine only: said so
    assert started == [("0.0.0.0", 8600, Path("r"))]
    cmd = dashboard.streamlit_command("127.0.0.1", 8600, Path("r"))
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[-3:] == ["--", "--runs", "r"]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    res = CliRunner().invoke(app, ["app", "--port", "70000"])
    assert res.exit_code == 2 and "--port must be in 1..65535" in res.output
    assert "Traceback" not in res.output and len(started) == 1
