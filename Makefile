# Two commands for a newcomer: `make demo` runs the pipeline end to end, `make test` runs the tests.
# Everything runs on the native stack (real services on 127.0.0.1, see stack/nativestack.py).
SHELL := /bin/bash
STACK := python3 stack/nativestack.py
WITH_ENV := set -a && . ./.stack/env && set +a &&
PYTEST := .venv/bin/pytest

.PHONY: up down status logs install clean demo test test-unit lint typecheck compose-config

up:            ## install what is missing and start Kafka, PostgreSQL, OpenSearch, HDFS, Airflow (KAFKA_BROKERS=3: three brokers)
	$(STACK) up $(if $(KAFKA_BROKERS),--kafka-brokers $(KAFKA_BROKERS))

down:          ## stop every service of the native stack
	$(STACK) down

status:        ## show which services are ready
	$(STACK) status

logs:          ## tail the logs (make logs S=kafka)
	$(STACK) logs $(S)

install:       ## install system packages, jars and Python packages only
	$(STACK) install

clean:         ## stop and delete the stack's data (keeps downloads)
	$(STACK) clean

demo: up       ## the main job end to end on the native stack
	$(WITH_ENV) .venv/bin/python -m demo

test: up       ## every test (unit, DAG, integration, e2e) against the native stack
	$(WITH_ENV) $(PYTEST) tests

test-unit:     ## unit tests only (no services)
	$(PYTEST) -m unit tests

lint:          ## ruff and mypy
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

compose-config: ## validate docker-compose.yml with a real compose parser
	POSTGRES_PASSWORD=x AIRFLOW_ADMIN_PASSWORD=x AIRFLOW__API_AUTH__JWT_SECRET=x AIRFLOW__API__SECRET_KEY=x \
		AIRFLOW__CORE__FERNET_KEY=x docker-compose -f docker-compose.yml config -q
