"""`workbench`: the root of the command line. It only registers the commands, one file each."""

from __future__ import annotations

import typer

from apps.cli import (
    audit,
    dashboard,
    demo,
    evaluate,
    facts,
    models,
    operators,
    probe,
    sae,
    unlearn,
    verdict,
    world,
)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Did an unlearning edit remove the knowledge, or only suppress it?")

app.command("models")(models.models)
app.command("eval")(evaluate.evaluate)
app.command("demo")(demo.demo)
app.command("answers")(demo.answers)
app.command("operators")(operators.operators)
app.command("unlearn")(unlearn.unlearn)
app.command("probe")(probe.probe)
app.command("audit")(audit.audit)
app.command("app")(dashboard.app_command)
app.add_typer(facts.app, name="facts")
app.add_typer(world.app, name="world")
# the old name of `world`, kept so scripts that call it keep working
app.add_typer(world.app, name="toyworld", hidden=True)
app.add_typer(sae.app, name="sae")
app.add_typer(verdict.controls_app, name="controls")
app.command("calibrate")(verdict.calibrate)
app.command("meta-eval")(verdict.meta_eval)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
