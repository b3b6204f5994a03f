# mailserverd: `make run` serves a dev instance from ./var, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-quick bench check-config clean

$(STAMP): setup.cfg pyproject.toml
	@sh scripts/ensure-venv.sh "$(PYTHON)" "$(VENV)"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/mailserverd dev

test: setup
	$(BIN)/python -m pytest -q -ra

test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/pop3_retr.py
	$(BIN)/python bench/smtp_accept.py
	$(BIN)/python bench/imap_fetch.py
	$(BIN)/python bench/http_send.py
	$(BIN)/python bench/imap_append_memory.py
	$(BIN)/python bench/spam_classify.py
	$(BIN)/python bench/backup_restore.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/encryption.py

clean:
	rm -rf $(VENV) build *.egg-info
