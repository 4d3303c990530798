"""Build glue: the C core is compiled by cffi from ksm_engine/_build_core.py."""
from setuptools import setup

setup(cffi_modules=["ksm_engine/_build_core.py:ffibuilder"])
