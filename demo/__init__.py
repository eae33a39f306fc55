"""Demo tooling outside Airflow: the demo site, the `make demo` runner, an Airflow REST client."""
