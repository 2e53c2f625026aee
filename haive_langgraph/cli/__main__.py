"""``python -m haive_langgraph.cli``: the ``haive-lg`` command."""

from haive_langgraph.cli import main

main()
