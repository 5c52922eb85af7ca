"""The minianimate course: exercises in notebooks, each a piece of AnimateDiff that minianimate already has.

A student writes the function, then `check("attention", attention)` compares it with the library's on random
inputs and says in one line what is wrong (calling the library's own version is a verdict too). Teachers: see course/README.md (build the student notebooks from the
solution notebooks with `python -m minianimate.course build`, grade with `python -m minianimate.course grade`).
"""
from minianimate.course.grader import Result, check

__all__ = ["Result", "check"]
