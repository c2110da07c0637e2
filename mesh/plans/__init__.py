"""Plans as data: the plan model with its checks, and the form a model writes plans in.

Pure Python below the planner: the planner runs plans (:mod:`mesh.planner`), training writes
examples of them for the planner SLM (:mod:`mesh.train.data.planner`), and both read the same
definitions here, so neither imports the other.
"""
