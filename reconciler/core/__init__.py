"""Pure domain code: status vocabulary, layout, manifests, declarations, facts and the planner.

Nothing here does I/O, reads the clock or knows about asyncio; every module is tested with
tables of inputs and expected outputs.
"""
