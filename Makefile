# The two commands of the README. Both set everything up first (scripts/setup.sh).
.PHONY: setup demo test test-quick bench formal mutation readme-figures

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/mulfree demo

test: setup
	.venv/bin/python -m pytest -n 2 --durations=10 -q

# The inner loop: the same suite, stopping at the first failure (last run's failures first),
# with cocotb builds kept between runs (a design whose Verilog did not change is not compiled
# again). CI runs `make test`.
test-quick: setup
	MULFREE_SIM_BUILDS=$${MULFREE_SIM_BUILDS:-$${XDG_CACHE_HOME:-$$HOME/.cache}/mulfree/cocotb} \
	    .venv/bin/python -m pytest -n 2 -q -x --ff

bench: setup
	.venv/bin/mulfree bench

formal: setup
	.venv/bin/mulfree formal

mutation: setup
	.venv/bin/mulfree mutate

# The README's training table, measured here (machine, load and commit in its caption).
readme-figures: setup
	.venv/bin/python scripts/readme_figures.py --write
