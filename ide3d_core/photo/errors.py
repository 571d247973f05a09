# SPDX-License-Identifier: GPL-3.0-or-later
"""The one exception type of photo import.

Every problem caused by the input photo (missing, empty, damaged, not an image, absurdly large, no face,
face index out of range, unusable mask) raises :class:`PhotoError` with a one-line message that names the
file and says what to do. The command line turns it into :class:`ide3d_core.cli.UserError`.
"""
from __future__ import annotations


class PhotoError(ValueError):
    """A photo (or a mask given with it) cannot be used; ``str(exc)`` is one line for the user."""

    def __init__(self, name: str, problem: str, advice: str) -> None:
        self.name, self.problem, self.advice = name, problem, advice
        super().__init__(f"{name}: {problem}; {advice}")
