"""Partitions: one dynamic partition per uploaded video (key ``<camera_id>/<timestamp>``)."""

from dagster import DynamicPartitionsDefinition

videos_partitions = DynamicPartitionsDefinition(name="videos")
