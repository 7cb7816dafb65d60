"""The error types s4c raises on purpose.

Everything the user can cause (a bad model, a bad option, a corrupt instruction stream) is an
`S4CError`: the CLI prints its one-line message and exits 2. Anything else that escapes is a bug
in s4c: the CLI prints one line and exits 1 (a traceback only with --debug).
"""


class S4CError(Exception):
    """Bad input to s4c. The message is one line and names the file / node / op at fault."""

    exit_code = 2

    def __init__(self, message: str):
        # One line, always: hostile names must not be able to forge extra lines of output.
        super().__init__(" ".join(str(message).split("\n")).replace("\r", " "))


class FrontendError(S4CError):
    """The ONNX model cannot be imported (malformed, unsupported op, unbound dynamic dim...)."""


class RuntimeShapeOperandError(FrontendError):
    """A shape-deciding operand is only known at run time. `value_name` names it, so a caller that
    can specialise (the ONNX backend adaptor) freezes the inputs it comes from and retries."""

    def __init__(self, message: str, value_name: str):
        super().__init__(message)
        self.value_name = value_name


class VerifyError(S4CError):
    """An IR graph breaks an invariant (SSA, def-before-use, type/shape consistency)."""


class ParseError(S4CError):
    """IR text that cannot be parsed; the message carries line:column."""


class PassError(S4CError):
    """A pass failed or was misconfigured; the message names the pass (and the node when known)."""


class TargetError(S4CError):
    """A backend/target cannot handle the request (unsupported layout, op, option...)."""


class S4ProgramError(S4CError):
    """An S4 program (binary or assembly) is malformed, corrupt or unsafe to execute."""
