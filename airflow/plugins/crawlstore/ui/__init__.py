"""The Pipeline page in Airflow's UI: lag, rate and health per topic and sink, dead letters by
sink and error kind, and their replay (docs/pipeline-page.md). The plugin that mounts it is
airflow/plugins/crawlstore_pipeline.py."""
