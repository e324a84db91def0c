"""The errors a user's input raises, apart from everything heavy: the command line reports them as
one line without importing torch."""


class UnknownNameError(KeyError):
    """No task or method of that name."""

    def __str__(self):  # KeyError quotes its message; a user wants the plain line
        return self.args[0]


class BudgetError(ValueError):
    """The NFE budget cannot hold the method's cheapest configuration."""


# the largest NFE budget a run takes: far above any sampler's (EDM's references solve at 511), far
# below what would allocate gigabytes per sample before anything runs
MAX_NFE = 2000


def check_budgets(nfe) -> None:
    """BudgetError for an NFE budget that is not an integer in 1..MAX_NFE."""
    for b in nfe:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_NFE:
            raise BudgetError(f"NFE budget {b!r} out of range: budgets are integers in 1..{MAX_NFE:,}")


class Unsupported(RuntimeError):
    """A task lacks what a method or a command needs (tuning data, a denoiser, ...)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: what was kept, in one line."""
