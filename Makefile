# The two commands of the README. Both set everything up first (scripts/setup.sh).
.PHONY: setup demo test bench formal mutation

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/mulfree demo

test: setup
	.venv/bin/python -m pytest -n 2 --durations=10 -q

bench: setup
	.venv/bin/mulfree bench

formal: setup
	.venv/bin/mulfree formal

mutation: setup
	.venv/bin/mulfree mutate
