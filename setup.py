"""Build hook for the optional compiled fold (stream/_fastfold.c); metadata is in
pyproject.toml. Without a C compiler the extension is skipped and the pure Python fold
(the definition of every figure) does all the work, only slower."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("stream._fastfold", ["stream/_fastfold.c"], libraries=["z"],
                  extra_compile_args=["-O2"], optional=True),
        Extension("stream.kafka._recordbatch", ["stream/kafka/_recordbatch.c"],
                  extra_compile_args=["-O2"], optional=True),
        Extension("stream.store._redisformats", ["stream/store/_redisformats.c"],
                  extra_compile_args=["-O2"], optional=True),
    ],
)
