"""(pytest layer docstring follows in the next commit)"""
