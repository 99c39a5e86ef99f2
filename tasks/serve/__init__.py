"""Reading results back for people and programs: API answers, search, vector index, report."""
