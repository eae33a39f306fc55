"""Standalone Kafka consumers that land the pipeline's topics in PostgreSQL, OpenSearch and HDFS."""
