"""Self-checking exercises: each ``check_...()`` inspects the real kernel state a student produced.

A check accepts any valid way to reach the goal, and answers with one line: what was expected,
what was found, and a hint when they differ (the way codecrafters and iximiuz Labs grade).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Verdict:
    """The outcome of one exercise check; prints as one line in a notebook."""

    ok: bool
    message: str
    hint: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"✅ {self.message}"
        return f"❌ {self.message}" + (f"\n   hint: {self.hint}" if self.hint else "")

    def _repr_pretty_(self, p, cycle):  # IPython shows the verdict, not the dataclass
        p.text(str(self))

    __repr__ = __str__


def verdict(ok: bool, passed: str, failed: str, hint: str = "") -> Verdict:
    """A Verdict that says *passed* when ok, else *failed* with *hint*."""
    return Verdict(ok, passed if ok else failed, "" if ok else hint)


def not_done(what: str) -> Verdict:
    """The answer still holds the blank (``...``) the exercise left for the student."""
    return Verdict(False, f"{what}: replace the ... with your answer, then run the cell again.")


# --- namespaces lessons (00-05) ---------------------------------------------------------------
