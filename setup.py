"""Build: generate the tollgate.v1 gRPC stubs from proto/, then package everything.

The Cython extensions of fastpath/ are added here as they arrive (issue "Fast path").
"""

import importlib.util
from pathlib import Path
from typing import ClassVar

from setuptools import Command, Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.egg_info import egg_info

HERE = Path(__file__).resolve().parent


def generate_stubs() -> None:
    spec = importlib.util.spec_from_file_location("proto_generate", HERE / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate()


class GenerateStubs(Command):
    """`python setup.py generate_stubs`: only the protoc step."""

    user_options: ClassVar[list] = []

    def initialize_options(self) -> None: ...

    def finalize_options(self) -> None: ...

    def run(self) -> None:
        generate_stubs()


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


class EggInfoWithStubs(egg_info):
    # Editable installs run egg_info, not build_py: generate there too so `pip install -e .` is complete.
    def run(self) -> None:
        generate_stubs()
        super().run()


class DevelopWithStubs(develop):
    def run(self) -> None:
        generate_stubs()
        super().run()


def fastpath_extensions() -> list:
    """The Cython modules of fastpath/ (Cython is a build requirement, see pyproject.toml)."""
    from Cython.Build import cythonize

    return cythonize(
        [
            Extension("fastpath.deck_image", ["fastpath/deck_image.pyx"], extra_compile_args=["-O2"]),
            Extension("fastpath._core", ["fastpath/_core.pyx"], extra_compile_args=["-O2"]),
        ],
        compiler_directives={"language_level": 3},
    )


setup(
    ext_modules=fastpath_extensions(),
    packages=["tollgate", "tollgate.v1", "control", "control.migrations", "control.api", "control.api.servicers",
              "control.access", "control.accounts", "control.catalog", "control.billing", "control.documents",
              "control.notifications", "admin", "fastpath",
              "fastpath.reference", "callstate", "kemi"],
    package_dir={"tollgate": "proto/tollgate", "tollgate.v1": "proto/tollgate/v1"},
    package_data={"tollgate.v1": ["*.proto", "*.pyi"], "control.migrations": ["*.sql"],
                  "callstate": ["lua/*.lua", "lua/lib/*.lua"]},
    cmdclass={
        "generate_stubs": GenerateStubs,
        "build_py": BuildPyWithStubs,
        "egg_info": EggInfoWithStubs,
        "develop": DevelopWithStubs,
    },
)
