"""Shim: everything lives in setup.cfg."""
import setuptools

setuptools.setup()
