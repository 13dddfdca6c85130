"""What the demo needs and a real run does not: the built-in data sets and their generators, and the demo's report."""
