"""C views of the caller's buffers for Process.write / read / readinto.

Process hands whole ranges to the core; these turn the Python side of a
transfer into a cffi pointer without copying whenever the buffer allows:
  * ``cbuffer(data)``: a read-only view of any bytes-like object
    (bytes, bytearray, memoryview, array, numpy array); a non-contiguous
    buffer is copied once, in C order;
  * ``writable_cbuffer(buf)``: a view of a writable, C-contiguous buffer
    (TypeError for anything else, as io's readinto);
  * ``new_bytes(n)``: a fresh ``bytes`` of n bytes for the core to fill
    before anyone sees it (one copy on read), or a bytearray off CPython.
"""
from ._native import ffi


def cbuffer(data):
    """A C view of any bytes-like object; non-contiguous buffers are copied once."""
    if isinstance(data, str):
        raise TypeError("data must be bytes-like, not str (encode it first)")
    try:
        return ffi.from_buffer(data)
    except (TypeError, ValueError, BufferError):
        # TypeError: no buffer interface (tried once more below, to give our
        # message); ValueError (numpy) / BufferError (memoryview): a buffer
        # that is not C-contiguous, which tobytes() copies in C order
        try:
            return ffi.from_buffer(memoryview(data).tobytes())
        except TypeError:
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None


def writable_cbuffer(buf):
    """A C view of a writable, C-contiguous buffer (bytearray, memoryview,
    array, numpy array); TypeError for anything else, as io's readinto."""
    try:
        return ffi.from_buffer(buf, require_writable=True)
    except (TypeError, ValueError, BufferError):
        raise TypeError("buffer must be a writable, C-contiguous bytes-like object, "
                        f"not {type(buf).__name__}") from None


try:  # one copy on read: fill a fresh bytes object before anyone sees it
    import ctypes

    _bytes_from_string_and_size = ctypes.pythonapi.PyBytes_FromStringAndSize
    _bytes_from_string_and_size.restype = ctypes.py_object
    _bytes_from_string_and_size.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
except (ImportError, AttributeError):  # pragma: no cover - not CPython
    _bytes_from_string_and_size = None


def new_bytes(n):
    """An uninitialised ``bytes`` of n > 0 bytes for the core to fill (a
    bytearray where CPython's PyBytes_FromStringAndSize is not at hand;
    the caller converts with ``as_bytes``)."""
    if _bytes_from_string_and_size is not None:
        return _bytes_from_string_and_size(None, n)
    return bytearray(n)  # pragma: no cover


def as_bytes(out):
    """``out`` (from new_bytes, filled) as bytes, copying only a bytearray."""
    return out if isinstance(out, bytes) else bytes(out)
