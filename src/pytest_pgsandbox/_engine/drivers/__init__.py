"""(stage docstring follows in the next commit)"""
