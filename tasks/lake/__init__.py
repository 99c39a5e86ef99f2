"""The lake: where objects are read from (storage), the tables' contract, Parquet parts and views."""
