"""`python -m apps.cli ...` runs the `workbench` command line."""

from apps.cli.main import main

main()
