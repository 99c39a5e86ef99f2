"""Braid's processing floor: plain functions over plain data, with no Prefect in them.

Rooms, with imports going one way (``serve`` → ``ingest`` → ``lake`` → ``media`` → ``common``):

- ``common``: the types every room shares (object references, limits, rejections).
- ``media``: one module per modality (probe, decode, features, embed) and the encoders.
- ``lake``: storage (folders, S3), the tables' contract, Parquet parts, views and queries.
- ``ingest``: what a run does: discover, plan, extract, fuse, land.
- ``serve``: answers for the API, search, the vector index and the HTML report.
- ``samples``: the sample-data generator behind `braid samples`, on its own.
"""
