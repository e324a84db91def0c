"""The errors a user's input raises, apart from everything heavy: the command line reports them as
one line without importing torch."""


class UnknownNameError(KeyError):
    """No task or method of that name."""

    def __str__(self):  # KeyError quotes its message; a user wants the plain line
        return self.args[0]


class BudgetError(ValueError):
    """The NFE budget cannot hold the method's cheapest configuration."""



class Unsupported(RuntimeError):
    """A task lacks what a method or a command needs (tuning data, a denoiser, ...)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: what was kept, in one line."""
