"""The steps of cloaca's build/test pipeline, one module per step.

``.angreal/task_cloaca.py`` strings them together into the `angreal cloaca`
commands; the modules here do the work and never print tracebacks at users:
anything that goes wrong is raised as :class:`errors.PipelineError` with a
paragraph saying what is wrong and what to do.
"""
