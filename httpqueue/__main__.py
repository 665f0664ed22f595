"""``python -m httpqueue`` is the ``httpqueue`` command."""
from httpqueue.cli import main

main()
