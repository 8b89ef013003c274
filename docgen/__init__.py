"""The reference, written from the code: `python -m docgen` writes docs/reference/*.md and the
man pages man/*.{1,5} from the models (field descriptions), the command table, the HTTP route
table, the metrics collector and the notification fields. tests/project/test_reference.py
regenerates them and fails when the committed copy differs."""
