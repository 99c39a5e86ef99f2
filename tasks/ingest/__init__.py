"""What a run does, step by step: discover, plan, extract, fuse and land."""
